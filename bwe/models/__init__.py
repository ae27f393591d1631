"""Generator (SEANet) and discriminators."""
