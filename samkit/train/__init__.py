"""Fine-tuning recipe of the SAM paper."""
