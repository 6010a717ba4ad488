# A tiny GPT on the built-in arithmetic-story corpus: a CPU smoke run of the language-model stack (seconds).
# Every key and its meaning: experiments/lm.py, class Config.
experiment = "lm"
corpus = "tiny"
n_docs = 4000
n_layer = 2
n_head = 2
n_embd = 64
block_size = 64
steps = 300
batch_size = 16
lr = 3e-3
device = "cpu"
threads = 1
