"""CARE networks: configuration, U-Net, the model class with train / predict / save / load."""
