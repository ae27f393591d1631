"""tf.distribute for training: which strategy, which worker this is, and how one step's per-replica
gradients become one update.

A step all-reduces every loss and gradient, so every replica holds the same sums and takes the same
decision: the update is applied only if every loss and gradient norm is finite (otherwise nothing moves
and the step reports ``finite: False``), after clipping each network's gradients to
``optim.grad_clip_norm`` (global norm).
"""

from __future__ import annotations

import os
from typing import Callable


def select_strategy():
    """MultiWorkerMirroredStrategy with TF_CONFIG, MirroredStrategy with several GPUs, else the default."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role(strategy) -> tuple[bool, int]:
    """``(is_chief, worker_index)``: the chief writes the run directory; others only what they must."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return is_chief, task_id if task_type == "worker" else 0


def apply_reduced_gradients(strategy, optimizer, grads, variables) -> None:
    """Apply already all-reduced ``grads`` with a Keras optimizer, in cross-replica context.

    ``optimizer.apply`` cannot be used here: it all-reduces again from a replica context, and under
    MirroredStrategy it needs a ``merge_call`` that is not available inside the ``tf.cond`` of the NaN guard.
    This is the update Keras itself runs after its all-reduce (``update_step`` per variable through
    ``strategy.extended.update``, then one more iteration), without the all-reduce.
    """
    learning_rate = optimizer.learning_rate
    for grad, variable in zip(grads, variables):
        strategy.extended.update(variable.value, lambda var, g: optimizer.update_step(g, var, learning_rate),
                                 args=(grad,), group=False)
    optimizer.iterations.assign_add(1)


def _all_reduce(terms: dict, grads: dict, clip: float):
    """In a replica: ``(summed gradients per network, metrics, finite)``. One all-reduce per kind of value;
    afterwards every replica holds identical sums, so its finiteness decision is the same everywhere."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    names = sorted(terms)
    losses_mean = context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.stack([terms[k] for k in names]))
    metrics = {f"loss/{k}": losses_mean[i] for i, k in enumerate(names)}
    finite = tf.reduce_all(tf.math.is_finite(losses_mean))
    reduced = {}
    for net, net_grads in grads.items():
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, net_grads)
        norm = tf.linalg.global_norm(summed)
        finite = tf.logical_and(finite, tf.math.is_finite(norm))
        if clip > 0:
            summed, _ = tf.clip_by_global_norm(summed, clip, use_norm=norm)
        reduced[net] = summed
        metrics[f"grad_norm/{net}"] = norm
    return reduced, metrics, finite


def distributed_step(strategy, gradients_fn: Callable, networks: dict, clip: float) -> Callable:
    """Wrap a per-replica ``(terms, grads) = gradients_fn(narrowband, wideband)`` into a full step.

    ``grads`` maps a network's name to the gradients of its variables; ``networks`` maps the same name to
    ``(variables, optimizer)``. The step returns the metrics (``loss/*``, ``grad_norm/*``) and ``finite``.
    """
    import tensorflow as tf

    def replica_step(narrowband, wideband):
        terms, grads = gradients_fn(narrowband, wideband)
        return _all_reduce(terms, grads, clip)

    def step(narrowband, wideband):
        with strategy.scope():
            reduced, metrics, finite = strategy.run(replica_step, args=(narrowband, wideband))
            finite_local = strategy.experimental_local_results(finite)[0]

            def apply():
                for net, net_grads in reduced.items():
                    variables, optimizer = networks[net]
                    apply_reduced_gradients(strategy, optimizer, net_grads, variables)
                return tf.constant(True)

            tf.cond(finite_local, apply, lambda: tf.constant(False))
            metrics = {k: strategy.experimental_local_results(v)[0] for k, v in metrics.items()}
            metrics["finite"] = finite_local
            return metrics

    return step
