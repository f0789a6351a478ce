"""What a file on disk is: the models file, checkpoint kinds from keys, the LoRA / embedding / VAE library, hashes (no torch)."""
