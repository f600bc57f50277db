"""What the stages are made of: the meter and fingerprint, preset banks and selection, the mastering chain, delivery, accepted levels."""
