"""Using the trained model: photos read as MNIST digits, what the CNN computes for one image, and
the guards in front of the served model."""
