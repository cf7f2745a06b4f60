"""The STeP language."""
