"""The fine-tuned model: the pretrained transformer body + a classification head, its loss, its sharded state."""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from headless_jax.experiment import dummy_batch
from headless_jax.model import BODY, HEAD
from headless_jax.model.layers import dense_init, zeros_init
from headless_jax.model.transformer import Transformer
from headless_jax.train.layout import Layout


class ClassificationHead(nn.Module):
    """Sequence classification / regression: pooled hidden state → dropout → linear."""
    num_outputs: int
    pooling: str = "cls"  # cls (first token) | mean (over non-padding tokens)
    dropout_rate: float = 0.1
    init_std: float = 0.02

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array, segment_ids_BxL: jax.Array, deterministic: bool = True) -> jax.Array:
        if self.pooling == "cls":
            pooled_BxD = h_BxLxD[:, 0]
        elif self.pooling == "mean":
            weights_BxL = (segment_ids_BxL != 0).astype(jnp.float32)
            pooled_BxD = (h_BxLxD * weights_BxL[..., None]).sum(1) / jnp.maximum(weights_BxL.sum(1, keepdims=True), 1)
        else:
            raise ValueError(f"unknown pooling {self.pooling!r}; use cls or mean")
        pooled_BxD = nn.Dropout(self.dropout_rate)(pooled_BxD.astype(jnp.float32), deterministic=deterministic)
        return nn.Dense(self.num_outputs, name="classifier",
                        kernel_init=dense_init(self.init_std, ("embed", "classes")),
                        bias_init=zeros_init(("classes",)))(pooled_BxD)


class Classifier(nn.Module):
    """tokens → [B, num_outputs] logits (or one regression output). Its body has the pretrained run's parameter
    names (a LanguageModel's body), so its parameters drop in unchanged."""
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


def pretrained_start(classifier: Classifier, seq_len: int) -> Callable[[dict, jax.Array], dict]:
    """`(body params, rng) → params`: the pretrained body and a fresh head drawn from `rng` (for
    Experiment.state_fn, so that one compilation serves every seed)."""
    batch = dummy_batch(seq_len)

    def params(body, rng):
        h_1xLxD = jnp.zeros((1, seq_len, classifier.model_cfg.d_model), jnp.float32)
        head = classification_head(classifier, parent=None)
        # A copy: the train step donates its state, and the pretrained body must survive for the next seed.
        return {BODY: jax.tree.map(jnp.copy, body), HEAD: head.init(rng, h_1xLxD, batch["segment_ids"])["params"]}
    return params


def build_predict(classifier: Classifier, param_shardings, layout: Layout) -> Callable:
    """`predict(params, batch) -> [B, num_outputs]`, deterministic, replicated on every process."""
    def predict(params, batch):
        return classifier.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"], True)

    return jax.jit(predict, in_shardings=(param_shardings, layout.batch_sharding),
                   out_shardings=NamedSharding(layout.mesh, PartitionSpec()))
