"""The forward-only half of scratchnet: the model file, its validation, the forward pass and the
input preprocessing, shared by the trainer and the service. Needs only NumPy, Pillow and pyspng."""
