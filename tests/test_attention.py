"""Every attention implementation the test backend can run agrees with `xla` (forward and gradient), and
`auto` only picks a fused kernel that can take the inputs. `xla` itself is checked against a float64
reference in tests/test_model.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headless_jax.model import attention

H, K = 2, 64
# Packed rows with padding: documents 1,2 then padding; one document cut by padding; a single document.
LENGTH = 256  # two splash blocks of 128, so the kernel's block skipping and online softmax are exercised
SEGMENTS = np.ones((3, LENGTH), np.int32)
SEGMENTS[0, 90:200], SEGMENTS[0, 200:] = 2, 0
SEGMENTS[1, 130:] = 0


def qkv(dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 3)
    return tuple((2 * jax.random.normal(k, (len(SEGMENTS), LENGTH, H, K))).astype(dtype) for k in keys)


def outputs_and_grads(attend, q, k, v, causal):
    """Outputs at real (non-padding) query rows, and the gradient of a loss on them w.r.t. q, k, v."""
    rows = jnp.asarray(SEGMENTS != 0)[:, :, None, None]
    probe = jax.random.normal(jax.random.key(1), q.shape)  # a generic cotangent

    def loss(q, k, v):
        return jnp.sum(jnp.where(rows, attend(q, k, v, jnp.asarray(SEGMENTS), causal), 0).astype(jnp.float32) * probe)

    out = attend(q, k, v, jnp.asarray(SEGMENTS), causal)
    return np.asarray(out, np.float32)[SEGMENTS != 0], jax.grad(loss, (0, 1, 2))(q, k, v)


def assert_agrees_with_xla(attend, causal, dtype=jnp.float32, tol=1e-5, reference=attention.xla_attention):
    q, k, v = qkv(dtype)
    out, grads = outputs_and_grads(attend, q, k, v, causal)
    ref_out, ref_grads = outputs_and_grads(reference, q, k, v, causal)
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)


def test_padding_keys_do_not_change_real_rows():
    q, k, v = qkv()
    changed_v = v.at[0, 200:].set(100.0)  # values of padding keys
    before = attention.xla_attention(q, k, v, jnp.asarray(SEGMENTS), True)
    after = attention.xla_attention(q, k, changed_v, jnp.asarray(SEGMENTS), True)
    np.testing.assert_array_equal(np.asarray(before)[SEGMENTS != 0], np.asarray(after)[SEGMENTS != 0])


@pytest.mark.parametrize("causal", [False, True])
def test_splash_kernel_agrees_with_xla(causal):
    # The Pallas interpreter runs the TPU kernel on any backend: our wrapper's layout, scaling and segment ids
    # are checked here; the compiled kernel itself only on a TPU.
    def splash(q, k, v, segments, causal):
        return attention.splash_attention(q, k, v, segments, causal, interpret=jax.default_backend() != "tpu")
    assert_agrees_with_xla(splash, causal)


@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="cuDNN flash attention needs a GPU (run with JAX_PLATFORMS=cuda on a GPU machine)")
@pytest.mark.parametrize("causal", [False, True])
def test_cudnn_agrees_with_xla(causal):
    # cuDNN takes bfloat16 only; the reference sees the same bfloat16 inputs, tolerance is bfloat16's.
    assert_agrees_with_xla(attention.cudnn_attention, causal, jnp.bfloat16, tol=3e-2)


@pytest.mark.parametrize("backend,dtype,length,head_dim,expected", [
    ("cpu", jnp.bfloat16, 256, 64, "xla"),
    ("gpu", jnp.bfloat16, 2048, 64, "cudnn"),
    ("gpu", jnp.float16, 128, 128, "cudnn"),
    ("gpu", jnp.float32, 2048, 64, "xla"),  # cuDNN takes no float32
    ("gpu", jnp.bfloat16, 2048, 12, "xla"),  # head_dim not a multiple of 8
    ("gpu", jnp.bfloat16, 127, 64, "xla"),  # odd length: the mask-as-bias needs an even one
    ("tpu", jnp.float32, 2048, 64, "splash"),
    ("tpu", jnp.bfloat16, 200, 64, "xla"),  # not a multiple of the 128 block
])
def test_auto_takes_the_fused_kernel_only_where_it_fits(backend, dtype, length, head_dim, expected):
    assert attention.resolve_implementation("auto", dtype, length, head_dim, backend) == expected


@pytest.mark.parametrize("name,backend,dtype,length,message", [
    ("cudnn", "gpu", jnp.float32, 128, "takes bfloat16 or float16 inputs, not float32"),
    ("cudnn", "cpu", jnp.bfloat16, 128, "needs a GPU backend"),
    ("splash", "tpu", jnp.float32, 100, "not a multiple"),
    ("splash", "cpu", jnp.float32, 128, "is a TPU kernel"),
    ("flash", "gpu", jnp.float32, 128, "unknown attention implementation"),
])
def test_explicit_kernel_that_cannot_run_names_the_reason(name, backend, dtype, length, message):
    with pytest.raises(ValueError, match=message):
        attention.resolve_implementation(name, dtype, length, 64, backend)




def xla_in_chunks_of(causal_chunk: int):
    return lambda q, k, v, segments, causal: attention.xla_attention(q, k, v, segments, causal, causal_chunk=causal_chunk)


@pytest.mark.parametrize("causal_chunk", [64, attention.XLA_CAUSAL_CHUNK])
def test_causal_xla_in_query_chunks_equals_the_full_square(causal_chunk):
    assert causal_chunk < LENGTH  # several chunks; the reference is one chunk: the whole L×L square
    assert_agrees_with_xla(xla_in_chunks_of(causal_chunk), causal=True, reference=xla_in_chunks_of(LENGTH))
