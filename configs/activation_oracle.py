# Activation oracles in the synthetic persona world: does an oracle trained on the base model's activations only
# read the persona shift an insecure-code fine-tune put into another model? 6 bases x 3 fine-tuned arms, with the
# base-model, no-vector and random-vector controls. Keys: experiments/activation_oracle.py.
experiment = "activation_oracle"
seeds = (0, 1, 2, 3, 4, 5)
probe_pool = "last"   # the linear-probe baseline reads each window's last position (the stronger of the two)
