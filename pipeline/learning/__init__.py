"""Learning from a label's own music: preset banks from mix -> master pairs, and training data (rendered variants)."""
