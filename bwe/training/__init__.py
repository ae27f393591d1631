"""The pieces of `bwe.train.Trainer`, one idea per module (``bwe/train.py`` is the loop and the CLI):

- `bwe.training.state`: what a run trains and checkpoints (networks, optimizers, counters), built from a
  recipe that is first checked to fit them;
- `bwe.training.checkpoints`: the run directory's checkpoints of that state: save, restore, and restore a
  checkpoint taken before the envelope head was added;
- `bwe.training.steps`: the losses and gradients of each phase (warm-up, GAN, envelope head) and the
  compiled step of each;
- `bwe.training.distribution`: tf.distribute: the strategy, the worker's role, and one step's
  all-reduce, non-finite guard, clipping and update;
- `bwe.training.validation`: validation scores and what is logged of them (TensorBoard, audio,
  spectrograms, ``valid_history.jsonl``);
- `bwe.training.progress`: the training metrics between two log points and the progress bar.
"""
