"""Audio I/O, narrowband simulation, datasets and the tf.data pipeline."""
