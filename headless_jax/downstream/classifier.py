"""The fine-tuned model: the pretrained transformer body + a classification head, its loss, its sharded state."""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from headless_jax.model.heads import ClassificationHead
from headless_jax.model.transformer import Transformer
from headless_jax.train.sharding import batch_sharding, logical_shardings
from headless_jax.train.state import TrainState, dummy_batch


class Classifier(nn.Module):
    """tokens → [B, num_outputs] logits (or one regression output). `body` has the pretrained run's parameter
    names (LanguageModel's `body`), so its parameters drop in unchanged."""
    model_cfg: ml_collections.FrozenConfigDict
    num_outputs: int
    pooling: str
    dropout_rate: float

    def setup(self):
        self.body = Transformer(self.model_cfg)
        self.head = classification_head(self)

    def __call__(self, tokens_BxL, segment_ids_BxL, positions_BxL, deterministic: bool = True) -> jax.Array:
        h_BxLxD = self.body(tokens_BxL, segment_ids_BxL, positions_BxL, deterministic)
        return self.head(h_BxLxD, segment_ids_BxL, deterministic)


def classification_head(classifier: Classifier, **kwargs) -> ClassificationHead:
    return ClassificationHead(classifier.num_outputs, classifier.pooling, classifier.dropout_rate,
                              classifier.model_cfg.init_std, **kwargs)


def class_weights(labels_N: np.ndarray, num_classes: int) -> np.ndarray:
    """Class-balanced weights N / (C · n_c): each class contributes equally to the loss (absent classes: 0)."""
    counts_C = np.bincount(labels_N, minlength=num_classes).astype(np.float64)
    return np.where(counts_C > 0, len(labels_N) / (num_classes * np.maximum(counts_C, 1)), 0.0).astype(np.float32)


def make_objective(classifier: Classifier, num_classes: int, weights_C: np.ndarray | None) -> Callable:
    """(params, batch, rng, deterministic) → (loss, metrics): weighted cross-entropy (weights_C None: plain mean),
    or mean squared error when num_classes == 0 (regression)."""
    def objective(params, batch, rng, deterministic):
        out_BxC = classifier.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"],
                                   deterministic, rngs={"dropout": rng})
        labels_B = batch["labels"]
        if num_classes == 0:
            loss = jnp.mean((out_BxC[:, 0] - labels_B) ** 2)
            return loss, {"loss": loss}
        nll_B = -jnp.take_along_axis(jax.nn.log_softmax(out_BxC), labels_B[:, None], axis=1)[:, 0]
        w_B = jnp.ones_like(nll_B) if weights_C is None else jnp.asarray(weights_C)[labels_B]
        loss = jnp.sum(w_B * nll_B) / jnp.sum(w_B)
        return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(out_BxC, -1) == labels_B)}
    return objective


def build_init(classifier: Classifier, optimizer: optax.GradientTransformation, seq_len: int, mesh,
               rules) -> tuple[Callable[[dict, int], TrainState], TrainState]:
    """(init, shardings): `init(body_params, seed)` is a state of the pretrained body, a fresh head (from `seed`)
    and fresh optimiser moments; one compilation serves every seed."""
    batch = dummy_batch(seq_len)

    def boxed_state(rng):
        params = classifier.init(rng, batch["tokens"], batch["segment_ids"], batch["positions"])["params"]
        return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32), "rng": rng}

    shardings = logical_shardings(jax.eval_shape(boxed_state, jax.random.PRNGKey(0)), mesh, rules)

    def state(body, rng):
        h_1xLxD = jnp.zeros((1, seq_len, classifier.model_cfg.d_model), jnp.float32)
        head = classification_head(classifier, parent=None)
        head_params = nn.unbox(head.init(rng, h_1xLxD, batch["segment_ids"])["params"])
        # A copy: the train step donates its state, and the pretrained body must survive for the next seed.
        params = {"body": jax.tree.map(jnp.copy, body), "head": head_params}
        return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32), "rng": rng}

    jitted = jax.jit(state, out_shardings=shardings)

    def init(body_params, seed: int) -> TrainState:
        with nn.logical_axis_rules(rules):
            return jitted(body_params, jax.random.PRNGKey(seed))
    return init, shardings


def build_predict(classifier: Classifier, param_shardings, mesh) -> Callable:
    """`predict(params, batch) -> [B, num_outputs]`, deterministic, replicated on every process."""
    def predict(params, batch):
        return classifier.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"], True)

    return jax.jit(predict, in_shardings=(param_shardings, batch_sharding(mesh)),
                   out_shardings=NamedSharding(mesh, PartitionSpec()))
