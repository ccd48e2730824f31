"""The network as a user of the trainer relies on it: building, float32 throughout,
determinism, export to the model-file layout (batch-norm folding), and that it learns."""

import math

import numpy as np
import pytest

from shared.forward import row_max, softmax
from trainer.activations import get_activation
from trainer.initializers import get_initializer
from trainer.layers import Activation, BatchNorm, Dense, Dropout
from trainer.losses import MSE, SoftmaxCrossEntropy, get_loss
from trainer.network import Network, build_mlp, outline_mlp
from trainer.optimizers import get_optimizer


def batch(n, d, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, classes, n)


def train_steps(net, x, y, steps, spec="adam", lr=1e-2):
    opt = get_optimizer(spec, lr=lr)
    for _ in range(steps):
        net.train_step(x, y, opt)
    return opt


def run_exported(layers, arrays, x):
    """An independent inference pass over an exported ``layers`` list (docs/model-format.md)."""
    x = x.astype(np.float64)
    for layer in layers:
        if layer["type"] == "dense":
            x = x @ arrays[f"{layer['name']}.weight"] + arrays[f"{layer['name']}.bias"]
        elif layer["type"] == "batchnorm":
            a = {k: arrays[f"{layer['name']}.{k}"] for k in ("gamma", "beta", "running_mean", "running_var")}
            x = a["gamma"] * (x - a["running_mean"]) / np.sqrt(a["running_var"] + layer["eps"]) + a["beta"]
        elif layer["name"] == "relu":
            x = np.maximum(x, 0)
        elif layer["name"] == "leaky_relu":
            x = np.where(x > 0, x, layer["alpha"] * x)
        elif layer["name"] == "tanh":
            x = np.tanh(x)
        elif layer["name"] == "sigmoid":
            x = 1 / (1 + np.exp(-x))
        elif layer["name"] == "softmax":
            x = np.exp(x - x.max(axis=1, keepdims=True))
            x /= x.sum(axis=1, keepdims=True)
    return x


# --- building -----------------------------------------------------------------------------

def test_build_mlp_names_and_shapes_follow_the_model_format():
    net = build_mlp([784, 256, 128, 10], batchnorm=True, dropout=0.1)
    shapes = {k: v.shape for k, v in net.params().items()}
    assert shapes == {
        "dense1.weight": (784, 256), "dense1.bias": (256,), "bn1.gamma": (256,), "bn1.beta": (256,),
        "dense2.weight": (256, 128), "dense2.bias": (128,), "bn2.gamma": (128,), "bn2.beta": (128,),
        "dense3.weight": (128, 10), "dense3.bias": (10,),
    }
    assert set(net.buffers()) == {"bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"}
    assert set(net.grads()) == set(shapes)
    assert [type(layer).__name__ for layer in net.layers] == [
        "Dense", "BatchNorm", "Activation", "Dropout", "Dense", "BatchNorm", "Activation", "Dropout", "Dense"]
    assert net.num_params() == 784 * 256 + 256 + 2 * 256 + 256 * 128 + 128 + 2 * 128 + 128 * 10 + 10


def test_repr_and_summary():
    net = build_mlp([784, 256, 128, 10], activation="leaky_relu(alpha=0.01)")
    text = repr(net)
    assert "(dense1): Dense(784 -> 256, init=he_normal)" in text
    assert "(act1): Activation(leaky_relu(alpha=0.01))" in text
    assert "SoftmaxCrossEntropy" in text
    table = net.summary(batch_size=32)
    assert "(32, 784)" in table and "(32, 256)" in table and "(32, 10)" in table
    assert "200,960" in table and "total parameters: 235,146" in table


@pytest.mark.parametrize("component", [Dense, BatchNorm, Activation, Dropout, SoftmaxCrossEntropy, MSE])
def test_every_backward_states_its_rule_and_shape_beside_it(component):
    """Someone learning backpropagation from this code reads each backward pass with its equation
    and the shape it returns on the method itself, not only in a docstring further up."""
    doc = component.backward.__doc__  # the method's own, not one inherited from the base class
    assert doc, f"{component.__name__}.backward has no docstring"
    assert "=" in doc or "d(loss)/d(" in doc, f"{component.__name__}.backward states no rule: {doc!r}"
    assert "(n, " in doc, f"{component.__name__}.backward states no shape: {doc!r}"


@pytest.mark.parametrize("rows", [2, 6])
def test_a_summary_between_a_forward_and_its_backward_leaves_the_gradients_as_they_were(rows):
    """The summary ran its probe batch of two rows through the layers themselves, overwriting what
    they keep for the backward pass: the gradients of a two-row batch came out wrong, silently, and
    a backward after any other batch failed."""
    x, y = batch(rows, 5, classes=3, seed=rows)

    def gradients(summary_between: bool) -> dict:
        net = build_mlp([5, 4, 3], batchnorm=True, dropout=0.3, dtype=np.float64, seed=2)
        net.loss.forward(net.forward(x, training=True), y)  # dropout's mask drawn from the seed
        if summary_between:
            net.summary()
        net.backward()
        return {name: grad.copy() for name, grad in net.grads().items()}

    plain, probed = gradients(False), gradients(True)
    for name in plain:
        np.testing.assert_array_equal(probed[name], plain[name], err_msg=name)


@pytest.mark.parametrize("kwargs", [
    {}, {"batchnorm": True, "dropout": 0.2}, {"sizes": [5, 3]},
    {"sizes": [11, 32, 32, 1], "task": "regression", "activation": "leaky_relu(alpha=0.1)", "init": "xavier_uniform"},
    {"sizes": [6, 4, 3], "dtype": np.float64, "bn_momentum": 0.8, "bn_eps": 1e-3, "batchnorm": True},
])
def test_an_outline_is_the_summary_of_the_network_it_describes(kwargs):
    """outline_mlp works the table out from the sizes alone, so that a network too big to build can
    be shown: it must be the table of the network built."""
    assert outline_mlp(**kwargs).summary(batch_size=32) == build_mlp(**kwargs).summary(batch_size=32)
    assert outline_mlp(**kwargs).num_params() == build_mlp(**kwargs).num_params()


def test_a_weight_drawn_a_block_at_a_time_is_the_weight_of_one_draw():
    """Each weight is drawn into its place a block at a time, not as one float64 array three times the
    size of the float32 weight; the values, and so every seeded run, stay as they were."""
    shape = (1100, 2000)  # three blocks
    for name in ("he_normal", "xavier_uniform", "normal(std=0.05)"):
        init = get_initializer(name)
        std = init.std(*shape)
        reference, rng = np.random.default_rng(7), np.random.default_rng(7)
        if init.distribution == "uniform":
            one_draw = reference.uniform(-math.sqrt(3) * std, math.sqrt(3) * std, size=shape).astype(np.float32)
        else:
            one_draw = (reference.standard_normal(size=shape) * std).astype(np.float32)
        weight = init(shape, rng)
        assert weight.dtype == np.float32 and weight.tobytes() == one_draw.tobytes(), name
        assert rng.random() == reference.random()  # the next layer's weights are drawn as before too


def test_initialisers_scale_with_fan_in_and_fan_out():
    rng = np.random.default_rng(0)
    he = get_initializer("he_normal")((400, 300), rng)
    assert he.dtype == np.float32 and he.std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    xavier = get_initializer("glorot_uniform")((400, 300), rng)
    limit = math.sqrt(6 / 700)
    assert np.abs(xavier).max() <= limit and xavier.std() == pytest.approx(limit / math.sqrt(3), rel=0.02)
    assert get_initializer("normal(std=0.05)")((300, 300), rng).std() == pytest.approx(0.05, rel=0.02)
    # a float64 twin starts from the same weights
    w32 = get_initializer("he_uniform")((5, 4), np.random.default_rng(3), np.float32)
    w64 = get_initializer("he_uniform")((5, 4), np.random.default_rng(3), np.float64)
    np.testing.assert_array_equal(w32, w64.astype(np.float32))


def test_component_specs():
    assert get_activation("leaky_relu(alpha=0.2)").alpha == 0.2
    assert get_activation("leaky_relu(0.3)").alpha == 0.3
    assert get_activation(" ReLU ").name == "relu"
    with pytest.raises(ValueError, match="unknown activation 'swish'.*known: leaky_relu, relu, sigmoid, tanh"):
        get_activation("swish")
    with pytest.raises(ValueError, match="cannot parse"):
        get_activation("relu(")
    with pytest.raises(ValueError, match="literal"):
        get_activation("leaky_relu(alpha=__import__('os'))")
    for alpha in (-1, 1, 1.5):  # the model file's range: a run must not fail only when it is saved
        with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\)"):
            get_activation(f"leaky_relu(alpha={alpha})")
    with pytest.raises(ValueError, match="unknown initializer"):
        build_mlp([3, 2], init="he")


def test_sigmoid_keeps_its_relative_precision_on_the_negative_tail():
    x = np.array([-80, -60, -30, -15, -5, 0, 5, 15, 30, 100], dtype=np.float32)  # e^-80: still a normal float32
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    got = get_activation("sigmoid")(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=1e-6)  # e.g. 9.4e-14 at -30, not 0 or 6 % off


def test_batchnorm_refuses_a_training_batch_of_one_row():
    """One row is its own mean: the output would be beta alone and the running variance would
    shrink towards 0, so training on it is refused (as PyTorch does)."""
    bn = BatchNorm(3, name="bn1")
    with pytest.raises(ValueError, match="bn1: batch norm needs at least 2 rows per batch in training, got 1"):
        bn.forward(np.ones((1, 3), dtype=np.float32), training=True)
    assert bn.forward(np.ones((1, 3), dtype=np.float32), training=False).shape == (1, 3)  # eval is fine
    with pytest.raises(ValueError, match="^bn: batch norm needs"):  # unnamed: its kind, not "None"
        BatchNorm(3).forward(np.ones((1, 3), dtype=np.float32), training=True)


def test_cross_entropy_refuses_labels_that_are_not_whole_numbers():
    """A label of 1.7 was cut to class 1 without a word; 1.0 is class 1."""
    loss = get_loss("softmax_cross_entropy")
    logits = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"labels must be integers \(class indices\), got float64 values such as 1.7"):
        loss.forward(logits, np.array([1.7, 0.0]))
    assert loss.forward(logits, np.array([1.0, 0.0])) == loss.forward(logits, np.array([1, 0]))


def test_bad_inputs_are_refused_with_the_layer_name():
    net = build_mlp([4, 3, 2])
    with pytest.raises(ValueError, match=r"dense1: expected input of shape \(n, 4\), got \(2, 5\)"):
        net.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="unique"):
        Network([Dense(2, 2, name="a"), Dense(2, 2, name="a")], "mse")
    with pytest.raises(ValueError, match="labels"):
        net.loss.forward(np.zeros((2, 2), np.float32), np.array([0, 2]))


# --- float32 and buffers ------------------------------------------------------------------

def test_activations_are_right_for_every_batch_shape_and_dtype():
    # A training epoch ends on a smaller batch, evaluation uses other sizes again, and gradient
    # checks run in float64: each call must use its own input's shape and dtype.
    rng = np.random.default_rng(5)
    for spec in ("relu", "leaky_relu(alpha=0.1)", "sigmoid", "tanh"):
        fn = get_activation(spec)
        for shape, dtype in [((4, 3), np.float32), ((7, 3), np.float32), ((2, 5), np.float64), ((4, 3), np.float32)]:
            x = rng.standard_normal(shape).astype(dtype)
            expected = {"relu": np.where(x > 0, x, 0), "leaky_relu": np.where(x > 0, x, 0.1 * x),
                        "sigmoid": 1 / (1 + np.exp(-x.astype(np.float64))), "tanh": np.tanh(x)}[fn.name]
            y = fn(x)
            assert y.shape == shape and y.dtype == dtype, (spec, shape, dtype)
            np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7, err_msg=f"{spec} {shape} {dtype}")


@pytest.mark.parametrize("activation", ["relu", "leaky_relu(alpha=0.1)", "sigmoid", "tanh"])
def test_float32_end_to_end(activation):
    net = build_mlp([6, 8, 5, 3], activation, batchnorm=True, dropout=0.2, seed=1)
    x, y = batch(16, 6, classes=3)
    opt = get_optimizer("adamw", lr=np.float64(1e-3), weight_decay=0.01, clip_norm=1.0)
    net.zero_grad()
    out = net.forward(x.astype(np.float64), training=True)  # float64 input is cast on the way in
    assert out.dtype == np.float32
    net.loss.forward(out, y)
    assert net.loss.backward().dtype == np.float32
    net.backward()
    opt.step(net.params(), net.grads())
    for group in (net.params(), net.grads(), net.buffers()):
        assert all(a.dtype == np.float32 for a in group.values())
    assert all(a.dtype == np.float32 for s in opt.state.values() for a in s.values())
    for layer in net.layers:
        assert all(buf.dtype == np.float32 for buf in layer._scratch.values()), layer.name
    assert net.predict_logits(x).dtype == np.float32
    assert net.predict_proba(x).dtype == np.float32

    reg = build_mlp([6, 4, 1], activation, task="regression", seed=1)
    reg.loss.forward(reg.forward(x, True), y.astype(np.float64))
    assert reg.loss.backward().dtype == np.float32


def test_forward_leaves_the_input_alone_and_returns_a_fresh_array():
    net = Network([Activation("relu"), Dense(3, 2, rng=0), Dropout(0.5, rng=0), Activation("tanh")], "mse")
    x = np.array([[-1.0, 2.0, -3.0]], dtype=np.float32)
    first = net.forward(x, training=True)
    net.loss.forward(first, np.zeros((1, 2)))
    net.backward()
    assert x.tolist() == [[-1.0, 2.0, -3.0]]
    kept = first.copy()
    net.forward(-x, training=False)
    np.testing.assert_array_equal(first, kept)


def test_predict_in_chunks_equals_one_pass():
    net = build_mlp([5, 7, 3], batchnorm=True, seed=2)
    x, y = batch(40, 5, classes=3)
    train_steps(net, x, y, 3)
    whole = net.predict_logits(x, batch_size=1000)
    np.testing.assert_allclose(net.predict_logits(x, batch_size=7), whole, rtol=1e-6)
    np.testing.assert_allclose(net.predict_proba(x), softmax(whole, out=np.empty_like(whole)), rtol=1e-6)
    assert net.predict(x).tolist() == whole.argmax(axis=1).tolist()


# --- batch norm and dropout behaviour -----------------------------------------------------

def test_batchnorm_running_statistics_and_modes():
    bn = BatchNorm(2, momentum=0.9)
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 16.0]], dtype=np.float32)
    y = bn.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-3)
    # running = 0.9 * initial + 0.1 * batch, with the unbiased batch variance (4 and 12)
    np.testing.assert_allclose(bn.buffers["running_mean"], [0.3, 1.2], rtol=1e-6)
    np.testing.assert_allclose(bn.buffers["running_var"], [0.9 + 0.4, 0.9 + 1.2], rtol=1e-6)
    expected = (x - [0.3, 1.2]) / np.sqrt(np.array([1.3, 2.1]) + 1e-5)
    np.testing.assert_allclose(bn.forward(x, training=False), expected, rtol=1e-5)
    np.testing.assert_allclose(bn.buffers["running_mean"], [0.3, 1.2], rtol=1e-6)  # eval does not update


def test_dropout_is_inverted_and_identity_in_eval():
    layer = Dropout(0.25, rng=0)
    x = np.ones((200, 50), dtype=np.float32)
    y = layer.forward(x, training=True)
    assert np.unique(y) == pytest.approx([0.0, 1 / 0.75])
    assert (y == 0).mean() == pytest.approx(0.25, abs=0.02)
    assert y.mean() == pytest.approx(1.0, abs=0.03)
    assert layer.forward(x, training=False) is x
    with pytest.raises(ValueError):
        Dropout(1.0)


# --- determinism --------------------------------------------------------------------------

def test_same_seed_gives_bit_identical_training():
    x, y = batch(64, 12, classes=4)

    def trained(seed):
        net = build_mlp([12, 16, 8, 4], batchnorm=True, dropout=0.3, seed=seed)
        for _ in range(3):  # epochs of minibatches in a seeded order
            order = np.random.default_rng(seed).permutation(64)
            train_steps(net, x[order], y[order], 4)
        return {**net.params(), **net.buffers()}

    a, b, c = trained(7), trained(7), trained(8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["dense1.weight"], c["dense1.weight"])


@pytest.mark.parametrize("batchnorm", [False, True])
def test_each_train_step_uses_its_own_batch_gradient(batchnorm):
    # train_step does not zero the gradient buffers: the backward pass must overwrite them, so a
    # step's gradients are that batch's alone, never added to the previous step's.
    x, y = batch(32, 12, classes=4)
    net = build_mlp([12, 16, 8, 4], batchnorm=batchnorm, seed=3)
    opt = get_optimizer("sgd", lr=0.1)
    net.train_step(x[:16], y[:16], opt)  # leaves the first batch's gradients in the buffers
    before = {k: v.copy() for k, v in net.params().items()}
    reference = build_mlp([12, 16, 8, 4], batchnorm=batchnorm, seed=3)
    reference.load_state({**before, **{k: v.copy() for k, v in net.buffers().items()}})
    reference.zero_grad()
    reference.loss.forward(reference.forward(x[16:], training=True), y[16:])
    reference.backward()
    net.train_step(x[16:], y[16:], opt)
    grads = net.grads()
    for name, expected in reference.grads().items():
        np.testing.assert_array_equal(grads[name], expected)
        np.testing.assert_array_equal(net.params()[name], before[name] - np.float32(0.1) * expected)


def test_state_round_trip():
    net = build_mlp([4, 6, 3], batchnorm=True, seed=0)
    x, y = batch(32, 4, classes=3)
    train_steps(net, x, y, 2)
    saved = net.state()
    train_steps(net, x, y, 2)
    assert not np.array_equal(net.params()["dense1.weight"], saved["dense1.weight"])
    net.load_state(saved)
    assert all(np.array_equal(v, saved[k]) for k, v in {**net.params(), **net.buffers()}.items())
    with pytest.raises(ValueError, match="missing"):
        net.load_state({"dense1.weight": saved["dense1.weight"]})


# --- export -------------------------------------------------------------------------------

def test_export_plain_classifier():
    net = build_mlp([784, 256, 128, 10], dropout=0.5, seed=0)
    layers, arrays = net.export()
    assert layers == [
        {"type": "dense", "name": "dense1", "in_features": 784, "out_features": 256},
        {"type": "activation", "name": "relu"},
        {"type": "dense", "name": "dense2", "in_features": 256, "out_features": 128},
        {"type": "activation", "name": "relu"},
        {"type": "dense", "name": "dense3", "in_features": 128, "out_features": 10},
        {"type": "activation", "name": "softmax"},
    ]
    assert sorted(arrays) == sorted(net.params())
    for key, a in arrays.items():
        assert a.dtype == np.float32 and a.flags.c_contiguous
        np.testing.assert_array_equal(a, net.params()[key])
    arrays["dense1.weight"][0, 0] = 99.0  # a copy: the network is untouched
    assert net.params()["dense1.weight"][0, 0] != 99.0


def test_export_regression_with_leaky_relu():
    net = build_mlp([11, 8, 1], activation="leaky_relu(alpha=0.01)", task="regression", seed=0)
    layers, arrays = net.export()
    assert layers == [
        {"type": "dense", "name": "dense1", "in_features": 11, "out_features": 8},
        {"type": "activation", "name": "leaky_relu", "alpha": 0.01},
        {"type": "dense", "name": "dense2", "in_features": 8, "out_features": 1},
    ]
    x, _ = batch(9, 11)
    np.testing.assert_allclose(run_exported(layers, arrays, x), net.predict_logits(x), rtol=1e-5, atol=1e-6)


def test_batchnorm_folding_matches_the_explicit_network():
    """Folded or explicit, the exported file computes the trained network's logits, eps included:
    a feature whose running variance is near eps is scaled as the network scales it."""
    net = build_mlp([20, 16, 12, 5], activation="tanh", batchnorm=True, dropout=0.2, seed=4)
    rng = np.random.default_rng(1)
    for p in net.params().values():  # move gamma and beta away from 1 and 0
        p += rng.normal(0, 0.3, p.shape).astype(np.float32)
    x, y = batch(64, 20, classes=5, seed=2)
    train_steps(net, x, y, 5)  # running statistics away from their initial values
    assert not np.allclose(net.buffers()["bn1.running_var"], 1)
    # Features whose running variance is near eps, where eps matters (gamma as small: tanh stays unsaturated).
    small = np.array([1e-6, 1e-5, 1e-4, 1e-3], np.float32)
    net.buffers()["bn2.running_var"][:4] = small
    net.params()["bn2.gamma"][:4] = np.sqrt(small)

    folded, folded_arrays = net.export(fold_batchnorm=True)
    explicit, explicit_arrays = net.export(fold_batchnorm=False)
    assert [l.get("batchnorm") for l in folded if l["type"] == "dense"] == ["folded", "folded", None]
    assert not any(l["type"] == "batchnorm" for l in folded)
    assert not any(k.startswith("bn") for k in folded_arrays)
    assert explicit[1] == {"type": "batchnorm", "name": "bn1", "features": 16, "eps": 1e-5}
    assert {"bn1.gamma", "bn1.beta", "bn1.running_mean", "bn1.running_var"} <= set(explicit_arrays)

    assert folded[-1] == explicit[-1] == {"type": "activation", "name": "softmax"}
    expected = net.predict_logits(x)
    np.testing.assert_allclose(run_exported(folded[:-1], folded_arrays, x), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run_exported(explicit[:-1], explicit_arrays, x), expected, rtol=1e-4, atol=1e-4)


def test_batchnorm_not_after_a_dense_layer_is_exported_explicitly():
    net = Network([BatchNorm(4), Dense(4, 3, rng=0), Activation("relu"), Dense(3, 2, rng=1)], "cross_entropy")
    layers, arrays = net.export(fold_batchnorm=True)
    assert layers[0] == {"type": "batchnorm", "name": "bn1", "features": 4, "eps": 1e-5}
    assert "batchnorm" not in layers[1]
    x, _ = batch(5, 4)
    np.testing.assert_allclose(run_exported(layers, arrays, x), net.predict_proba(x), atol=1e-6)


# --- learning -----------------------------------------------------------------------------

@pytest.mark.parametrize("spec,lr", [("adam", 0.01), ("nesterov", 0.1)])
def test_overfits_a_tiny_subset(spec, lr):
    """64 samples with arbitrary labels: a network that can learn memorises them."""
    x, y = batch(64, 20, classes=4, seed=3)
    net = build_mlp([20, 64, 4], seed=0)
    opt = get_optimizer(spec, lr=lr)
    losses = [net.train_step(x, y, opt)[0] for _ in range(300)]
    assert (net.predict(x) == y).mean() == 1.0
    assert losses[-1] < 0.05 < losses[0]


def test_regression_learns_a_linear_target():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 3)).astype(np.float32)
    target = (x @ np.array([1.5, -2.0, 0.5]) + 0.3).astype(np.float32)
    net = build_mlp([3, 16, 1], activation="tanh", init="xavier_normal", task="regression", seed=0)
    opt = get_optimizer("adam", lr=0.01)
    for _ in range(400):
        net.train_step(x, target, opt)
    rmse = float(np.sqrt(np.mean((net.predict(x)[:, 0] - target) ** 2)))
    assert rmse < 0.1


def test_summary_shows_the_shapes_the_forward_pass_produces(monkeypatch):
    """A forward that disagrees with the shapes a layer declares (a transposed weight, a wrong
    output size) is named by the summary, not printed as a table of the declared shapes."""
    net = build_mlp([784, 32, 10])
    monkeypatch.setattr(Dense, "forward", lambda self, x, training=True: x @ self.params["weight"].T)
    with pytest.raises(ValueError, match=r"^dense1: forward fails on input of shape \(2, 784\): matmul"):
        net.summary(batch_size=128)
    monkeypatch.undo()
    monkeypatch.setattr(Dense, "output_features", lambda self, in_features: in_features)
    declared = r"^dense1: forward returns shape \(2, 32\), but the layer declares \(2, 784\)"
    with pytest.raises(ValueError, match=declared):
        net.summary(batch_size=128)


@pytest.mark.parametrize("shape", [(1, 1), (6, 1), (7, 3), (300, 10), (0, 5), (40, 33), (20, 1000), (0, 1000)])
def test_row_max_is_each_rows_maximum_nan_included(shape):
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    if x.size > 4:
        x.flat[4] = np.nan  # a NaN row's maximum is NaN, as with x.max
    expected = x.max(axis=1, keepdims=True) if len(x) else np.empty((0, 1), np.float32)
    np.testing.assert_array_equal(row_max(x), expected)
    assert row_max(x).shape == (shape[0], 1) and row_max(x).dtype == x.dtype
