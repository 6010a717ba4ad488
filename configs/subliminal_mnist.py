# Subliminal learning on MNIST, the paper's protocol (Cloud et al. 2025, Sec. 6.2, Fig. 10b).
# Every key and its meaning: experiments/subliminal_mnist.py, class Config.
experiment = "subliminal_mnist"
n_seeds = 10        # the paper used 100: --n_seeds=100 (a GPU runs them at once)
