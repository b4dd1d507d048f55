"""Image encoders (torch): a registry of CNNs, random convolutional features, sequence
encoders, and cross-fitted fine-tuning. Never imports the effect side."""
