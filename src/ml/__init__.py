"""The ML core: params, MNIST data, the CNN, its one training loop, the backend and devices, and the
figures of the pipeline's reports."""
