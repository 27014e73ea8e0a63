"""Real-time B2B loyalty segmentation worker."""
