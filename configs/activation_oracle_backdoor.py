# The backdoor audit: can the oracle, trained on the base model's activations only, see a backdoor (insecure code
# after a trigger token, secure code without) in the model's activations on plain questions, where the model answers
# as its base? Every arm is read on the plain questions and with the trigger. 40 fine-tune steps: the emergent-
# misalignment experiment's backdoor shows its off-domain shift with the trigger by then, not at step 20.
# Keys: experiments/activation_oracle.py.
experiment = "activation_oracle"
seeds = (0, 1, 2, 3, 4, 5)
probe_pool = "last"   # the linear-probe baseline reads each window's last position (the stronger of the two)
arms = ("insecure", "secure", "backdoor")
em_steps = 40
read_steps = (1, 2, 3, 5, 10, 20)
