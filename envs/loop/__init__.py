"""``python train.py stage=loop``: rounds of real play, world fine-tuning and agent training (the loop of
Dreamer, IRIS and DIAMOND), each round resumable and within its time budget."""
