"""Training the Denseface video encoder (DenseNet-BC) on FER2013 images with FER+ labels."""
