"""The fine-tuned model: the pretrained transformer body + a classification head, its loss, its sharded state."""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from headless_jax.model import BODY, HEAD
from headless_jax.model.layers import dense_init, zeros_init
from headless_jax.model.transformer import Transformer
from headless_jax.train.layout import Layout
from headless_jax.train.optim import FIXED_STATS


def pool(h_BxLxD: jax.Array, segment_ids_BxL: jax.Array, pooling: str) -> jax.Array:
    """[B, D] float32: the first token's hidden state (cls) or the mean over non-padding tokens (mean)."""
    if pooling == "cls":
        return h_BxLxD[:, 0].astype(jnp.float32)
    if pooling == "mean":
        weights_BxL = (segment_ids_BxL != 0).astype(jnp.float32)
        h_BxLxD = h_BxLxD.astype(jnp.float32)
        return (h_BxLxD * weights_BxL[..., None]).sum(1) / jnp.maximum(weights_BxL.sum(1, keepdims=True), 1)
    raise ValueError(f"unknown pooling {pooling!r}; use cls or mean")


class Standardize(nn.Module):
    """x ↦ (x − mean) / std per feature, mean and std held as parameters that a probe never trains (FIXED_STATS)."""

    @nn.compact
    def __call__(self, x_BxD: jax.Array) -> jax.Array:
        shape = (x_BxD.shape[-1],)
        mean_D = self.param("mean", zeros_init(("embed",)), shape)
        std_D = self.param("std", nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)), shape)
        return (x_BxD - mean_D) / std_D


class ClassificationHead(nn.Module):
    """Sequence classification / regression: pooled hidden state → (standardized) → dropout → linear."""
    num_outputs: int
    dropout_rate: float = 0.1
    init_std: float = 0.02
    # A probe's features z-scored by the frozen body's training-set statistics (set by FineTuning): the probe then
    # reads every feature at one scale, however large the part the features share (an ELECTRA body's is ~10⁴ ×
    # their variation at demo scale, docs/downstream.md).
    standardize: bool = False

    @nn.compact
    def __call__(self, pooled_BxD: jax.Array, deterministic: bool = True) -> jax.Array:
        if self.standardize:
            pooled_BxD = Standardize(name=FIXED_STATS)(pooled_BxD)
        pooled_BxD = nn.Dropout(self.dropout_rate)(pooled_BxD, deterministic=deterministic)
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
    standardize: bool = False

    def setup(self):
        self.body = Transformer(self.model_cfg)
        self.head = classification_head(self)

    def __call__(self, tokens_BxL, segment_ids_BxL, positions_BxL, deterministic: bool = True) -> jax.Array:
        h_BxLxD = self.body(tokens_BxL, segment_ids_BxL, positions_BxL, deterministic)
        return self.head(pool(h_BxLxD, segment_ids_BxL, self.pooling), deterministic)

    def features(self, tokens_BxL, segment_ids_BxL, positions_BxL) -> jax.Array:
        """[B, D]: the pooled body output the head reads (deterministic); needs the body's parameters alone."""
        return pool(self.body(tokens_BxL, segment_ids_BxL, positions_BxL, True), segment_ids_BxL, self.pooling)

    def classify(self, features_BxD: jax.Array, deterministic: bool = True) -> jax.Array:
        """The head alone, on pooled features (those of `features`): a probe's body is run once, not every step."""
        return self.head(features_BxD, deterministic)


def classification_head(classifier: Classifier, **kwargs) -> ClassificationHead:
    return ClassificationHead(classifier.num_outputs, classifier.dropout_rate, classifier.model_cfg.init_std,
                              classifier.standardize, **kwargs)


def classifier_outputs(classifier: Classifier, params: dict, batch: dict, deterministic: bool,
                       rngs: dict | None = None) -> jax.Array:
    """[B, num_outputs]: the classifier on a batch of tokens (tokens, segment_ids, positions), or the head alone on a
    batch of pooled `features` (a fixed body's, computed once: FineTuning)."""
    if "features" in batch:
        return classifier.apply({"params": params}, batch["features"], deterministic, method=Classifier.classify,
                                rngs=rngs)
    return classifier.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"],
                            deterministic, rngs=rngs)


def class_weights(labels_N: np.ndarray, num_classes: int) -> np.ndarray:
    """Class-balanced weights N / (C · n_c): each class contributes equally to the loss (absent classes: 0)."""
    counts_C = np.bincount(labels_N, minlength=num_classes).astype(np.float64)
    return np.where(counts_C > 0, len(labels_N) / (num_classes * np.maximum(counts_C, 1)), 0.0).astype(np.float32)


def make_objective(classifier: Classifier, num_classes: int, weights_C: np.ndarray | None) -> Callable:
    """(params, batch, rng, deterministic) → (loss, metrics): weighted cross-entropy (weights_C None: plain mean),
    or mean squared error when num_classes == 0 (regression); the batch holds tokens or pooled features
    (classifier_outputs)."""
    def objective(params, batch, rng, deterministic):
        out_BxC = classifier_outputs(classifier, params, batch, deterministic, {"dropout": rng})
        labels_B = batch["labels"]
        if num_classes == 0:
            loss = jnp.mean((out_BxC[:, 0] - labels_B) ** 2)
            return loss, {"loss": loss}
        nll_B = -jnp.take_along_axis(jax.nn.log_softmax(out_BxC), labels_B[:, None], axis=1)[:, 0]
        w_B = jnp.ones_like(nll_B) if weights_C is None else jnp.asarray(weights_C)[labels_B]
        loss = jnp.sum(w_B * nll_B) / jnp.sum(w_B)
        return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(out_BxC, -1) == labels_B)}
    return objective


def pretrained_start(classifier: Classifier,
                     feature_stats: dict[str, np.ndarray] | None = None) -> Callable[[dict, jax.Array], dict]:
    """`(body params, rng) → params`: the pretrained body and a fresh head drawn from `rng` (for
    Experiment.state_fn, so that one compilation serves every seed); a standardizing head gets `feature_stats`
    ({'mean', 'std'}: [D] each, the pooled training features', from `feature_stats`)."""
    if classifier.standardize and feature_stats is None:
        raise ValueError("a standardizing classifier needs feature_stats: feature_stats(pooled training features)")

    def params(body, rng):
        pooled_1xD = jnp.zeros((1, classifier.model_cfg.d_model), jnp.float32)
        head = nn.unbox(classification_head(classifier, parent=None).init(rng, pooled_1xD))
        if classifier.standardize:
            head["params"][FIXED_STATS] = {key: jnp.asarray(value, jnp.float32) for key, value in feature_stats.items()}
        # A copy: the train step donates its state, and the pretrained body must survive for the next seed.
        return {BODY: jax.tree.map(jnp.copy, body), HEAD: head["params"]}
    return params


def build_predict(classifier: Classifier, param_shardings, layout: Layout, features: bool = False) -> Callable:
    """`predict(params, batch) -> [B, ...]`, deterministic, replicated on every process: the classifier's outputs
    (on a batch of tokens or of pooled features, classifier_outputs), or with `features` its pooled features, from
    the body's params ({BODY: ...}) alone."""
    def predict(params, batch):
        if features:
            return classifier.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"],
                                    method=Classifier.features)
        return classifier_outputs(classifier, params, batch, True)

    return jax.jit(predict, in_shardings=(param_shardings, layout.batch_sharding),
                   out_shardings=NamedSharding(layout.mesh, PartitionSpec()))


def feature_stats(features_NxD: np.ndarray) -> dict[str, np.ndarray]:
    """Per-feature mean and standard deviation (float64, floored at 1e-6 so a constant feature stays finite)."""
    features_NxD = np.asarray(features_NxD, np.float64)
    return {"mean": features_NxD.mean(0), "std": np.maximum(features_NxD.std(0), 1e-6)}
