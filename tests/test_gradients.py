"""Backward passes against numerical gradients: float64, random shapes under a fixed seed,
every parameter of every layer type, every activation, both losses."""

import itertools

import numpy as np
import pytest

from trainer.gradcheck import check_network, format_table, gradcheck, run_gradcheck
from trainer.layers import Activation, BatchNorm, Dense, Dropout
from trainer.losses import MSE, SoftmaxCrossEntropy
from trainer.network import build_mlp

F64 = np.float64
TOL = 1e-6


def numeric_grad(f, array, h=1e-5):
    """Central differences of the scalar f() with respect to each element of array."""
    grad = np.zeros_like(array, dtype=F64)
    for idx in np.ndindex(array.shape):
        saved = array[idx]
        array[idx] = saved + h
        up = f()
        array[idx] = saved - h
        down = f()
        array[idx] = saved
        grad[idx] = (up - down) / (2 * h)
    return grad


def rel_error(a, b):
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-3)


def shape(rng):
    return int(rng.integers(2, 7)), int(rng.integers(2, 8))


def check_layer(layer, x, training=True, before_forward=lambda: None):
    """Compare every parameter gradient and the input gradient of layer on x."""
    direction = np.random.default_rng(1).standard_normal(layer.output_features(x.shape[1]) * x.shape[0])
    direction = direction.reshape(x.shape[0], -1)

    def f():
        before_forward()
        return float(np.sum(layer.forward(x, training) * direction))

    layer.zero_grad()
    before_forward()
    layer.forward(x, training)
    grad_in = layer.backward(direction.copy())
    for name, param in layer.params.items():
        assert layer.grads[name].dtype == F64
        assert rel_error(layer.grads[name], numeric_grad(f, param)) < TOL, name
    assert rel_error(grad_in, numeric_grad(f, x)) < TOL, "input"


def test_dense():
    rng = np.random.default_rng(0)
    n, d_in = shape(rng)
    layer = Dense(d_in, int(rng.integers(2, 8)), rng=rng, dtype=F64)
    layer.params["bias"][...] = rng.standard_normal(layer.out_features)
    check_layer(layer, rng.standard_normal((n, d_in)))


@pytest.mark.parametrize("spec", ["relu", "leaky_relu(alpha=0.1)", "leaky_relu(alpha=0.0)", "sigmoid", "tanh"])
def test_activation(spec):
    rng = np.random.default_rng(2)
    check_layer(Activation(spec, dtype=F64), rng.standard_normal(shape(rng)) * 3)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm(training):
    rng = np.random.default_rng(3)
    n, d = shape(rng)
    bn = BatchNorm(d, dtype=F64)
    bn.params["gamma"][...] = rng.uniform(0.5, 2, d)
    bn.params["beta"][...] = rng.standard_normal(d)
    bn.buffers["running_mean"][...] = rng.standard_normal(d)
    bn.buffers["running_var"][...] = rng.uniform(0.5, 2, d)
    check_layer(bn, rng.standard_normal((n, d)) * 2 + 1, training=training)


def test_dropout_with_a_fixed_mask():
    rng = np.random.default_rng(4)
    layer = Dropout(0.4, dtype=F64)

    def same_mask():
        layer.rng = np.random.default_rng(7)

    check_layer(layer, rng.standard_normal(shape(rng)), before_forward=same_mask)
    assert 0 < np.count_nonzero(layer._mask == 0) < layer._mask.size


def test_softmax_cross_entropy_with_labels_and_soft_targets():
    rng = np.random.default_rng(5)
    n, k = shape(rng)
    logits = rng.standard_normal((n, k)) * 4
    soft = rng.dirichlet(np.ones(k), size=n)
    for target in (rng.integers(0, k, n), soft, soft * rng.uniform(0.5, 2.0, size=(n, 1))):  # rows of any mass
        loss = SoftmaxCrossEntropy()
        loss.forward(logits, target)
        analytic = loss.backward().copy()
        assert rel_error(analytic, numeric_grad(lambda: loss.forward(logits, target), logits)) < TOL


def test_softmax_cross_entropy_value_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, np.array([1, 2]))
    # row 0: logsumexp = 1000, loss = 1000 - 0; row 1: log 3
    assert value == pytest.approx((1000 + np.log(3)) / 2, rel=1e-6)
    grad = loss.backward()
    assert np.isfinite(grad).all() and grad.dtype == np.float32
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0], [1 / 6, 1 / 6, -1 / 3]], atol=1e-7)


def test_mse():
    rng = np.random.default_rng(6)
    out = rng.standard_normal(shape(rng))
    target = rng.standard_normal(out.shape)
    loss = MSE()
    assert loss.forward(out, target) == pytest.approx(np.mean((out - target) ** 2))
    analytic = loss.backward().copy()
    assert rel_error(analytic, numeric_grad(lambda: loss.forward(out, target), out)) < TOL
    column = MSE()  # one regression output: targets of shape (n,) are accepted
    assert column.forward(out[:, :1], target[:, 0]) == pytest.approx(np.mean((out[:, 0] - target[:, 0]) ** 2))


@pytest.mark.parametrize("task,activation", [("classification", "leaky_relu(alpha=0.05)"), ("regression", "tanh")])
def test_whole_network_with_batchnorm_and_dropout(task, activation):
    rng = np.random.default_rng(8)
    sizes = [int(s) for s in rng.integers(2, 7, 3)] + [3]
    net = build_mlp(sizes, activation, batchnorm=True, dropout=0.25, task=task, seed=3, dtype=F64)
    dropouts = [layer for layer in net.layers if isinstance(layer, Dropout)]
    x = rng.standard_normal((5, sizes[0]))
    y = rng.integers(0, 3, 5) if task == "classification" else rng.standard_normal((5, 3))

    def f():
        for i, layer in enumerate(dropouts):
            layer.rng = np.random.default_rng(i)
        return net.loss.forward(net.forward(x, training=True), y)

    net.zero_grad()
    f()
    net.backward()
    grads = {k: v.copy() for k, v in net.grads().items()}
    assert set(grads) == set(net.params())
    for name, param in net.params().items():
        assert rel_error(grads[name], numeric_grad(f, param)) < TOL, name


def test_gradients_accumulate_until_zero_grad():
    rng = np.random.default_rng(9)
    net = build_mlp([4, 5, 3], batchnorm=True, seed=0, dtype=F64)
    x, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    net.zero_grad()
    net.loss.forward(net.forward(x, True), y)
    net.backward()
    once = {k: v.copy() for k, v in net.grads().items()}
    net.loss.forward(net.forward(x, True), y)
    net.backward()
    for k, v in net.grads().items():
        np.testing.assert_allclose(v, 2 * once[k], rtol=1e-12, atol=1e-15)
    net.zero_grad()
    assert all(not v.any() for v in net.grads().values())


def test_run_gradcheck_passes_and_prints_a_table(capsys):
    assert run_gradcheck(verbose=True, seed=3)
    out = capsys.readouterr().out
    # what the figures are, said above them: the method, the step, the error's formula, the tolerance
    assert out.startswith("Each gradient of backward() against central differences (f(x+h) - f(x-h)) / 2h, h = 1e-05, "
                          "in float64, on random shapes and values (seed 3). The error is max|analytic - numeric| / ")
    assert "the tolerance is 1e-06.\n\ncomponent " in out and " rel. error  result\n" in out
    for component in ("Dense", "Activation(relu)", "Activation(sigmoid)", "Activation(tanh)", "leaky_relu",
                      "BatchNorm (train)", "Dropout", "SoftmaxCrossEntropy", "MSE", "bn1.gamma"):
        assert component in out
    assert "FAIL" not in out


def test_gradcheck_catches_a_wrong_backward():
    class Off(Dense):
        def backward(self, grad_out):
            grad_in = super().backward(grad_out)
            self.grads["weight"] *= 1.001  # a 0.1% error
            return grad_in

    rows = gradcheck(Off(3, 4, dtype=F64, rng=0), label="broken")
    by_param = {r.param: r for r in rows}
    assert not by_param["weight"].passed and by_param["bias"].passed and by_param["input"].passed
    assert "FAIL" in format_table(rows)
    with pytest.raises(ValueError, match="float64"):
        gradcheck(Dense(3, 4))



def test_gradcheck_catches_batchnorm_backward_that_leaves_gamma_out(monkeypatch, capsys):
    """The input gradient of batch norm is scaled by gamma: a backward that forgets it matches
    the numbers only while gamma is 1, as in a freshly built layer."""
    backward = BatchNorm.backward

    def gamma_left_out(self, grad_out):
        grad_in = backward(self, grad_out)
        if self._used_batch_statistics:
            grad_in /= self.params["gamma"]
        return grad_in

    monkeypatch.setattr(BatchNorm, "backward", gamma_left_out)
    assert not run_gradcheck(verbose=True)
    failed = [line.split() for line in capsys.readouterr().out.splitlines() if line.endswith("FAIL")]
    assert [(words[0], words[2]) for words in failed] == [("BatchNorm", "input")]


def test_gradcheck_names_the_component_whose_backward_raises(monkeypatch, capsys):
    """A missing transpose is a shape error, not a wrong number: the check still names the layer
    and the line that raised, and runs every other component."""
    from trainer import cli

    backward = Dense.backward

    def missing_transpose(self, grad_out):
        backward(self, grad_out)
        return grad_out @ self.params["weight"]  # should be weight.T

    monkeypatch.setattr(Dense, "backward", missing_transpose)
    assert cli.main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "Dense raised ValueError: matmul" in out
    assert "(in missing_transpose, test_gradients.py:" in out
    assert "Activation(relu)  " in out and "MSE  " in out  # the other checks ran
    assert "GRADIENT CHECK FAILED" in out


def gradcheck_rows(out: str) -> dict[str, list[str]]:
    """The table rows of gradcheck's output (from its rule to its verdict), keyed by the array they
    compare: [shape, error, result]."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    rows = [line.split() for line in itertools.takewhile(lambda line: "gradients match" not in line, lines[start:])]
    return {words[-4]: words[-3:] for words in rows}


def test_gradcheck_checks_the_network_trains_flags_build_at_its_real_size(capsys):
    """cs231n's sparse check: a sample of each array's entries, on the network as it will be trained."""
    from trainer import cli

    assert cli.main(["gradcheck", "--hidden", "256", "128", "--activation", "leaky_relu", "--batchnorm",
                     "--dropout", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "at 20 entries sampled at random from each parameter array" in out.splitlines()[0]
    assert "(dropout1): Dropout(rate=0.2)" in out and "Activation(leaky_relu(alpha=0.01))" in out
    assert {name: shape for name, (shape, _, _) in gradcheck_rows(out).items()} == {
        "dense1.weight": "784x256", "dense1.bias": "256", "bn1.gamma": "256", "bn1.beta": "256",
        "dense2.weight": "256x128", "dense2.bias": "128", "bn2.gamma": "128", "bn2.beta": "128",
        "dense3.weight": "128x10", "dense3.bias": "10"}
    assert "10/10 gradients match" in out and out.endswith("all gradients match\n")


@pytest.mark.parametrize("activation", ["relu", "leaky_relu(alpha=0.1)"])
def test_a_correct_network_passes_though_a_step_of_h_crosses_a_relus_kink(activation):
    """A unit's input 1e-7 from 0: steps of +-1e-5 on its weights cross the kink, where the central
    difference averages two slopes. The check failed such a correct network (exit 1, a gradcheck of
    784-1024-1024-10 at --samples 400 hit one); those entries are now left out and counted."""
    network = build_mlp([3, 4, 2], activation, seed=0, dtype=F64)
    x = np.random.default_rng(1).standard_normal((4, 3))
    dense = network.layers[0]
    dense.params["bias"][0] = 1e-7 - x[0] @ dense.params["weight"][:, 0]
    rows = check_network(network, x, np.array([0, 1, 1, 0]))
    assert all(row.passed for row in rows), format_table(rows)
    kinked = {row.param: row.kinked for row in rows}
    assert kinked["dense1.weight"] == 3 and kinked["dense1.bias"] == 1 and kinked["dense2.weight"] == 0
    assert "4 sampled entries left out: the steps of +-h moved a ReLU's input across 0" in format_table(rows)


def test_gradcheck_of_a_network_names_the_array_a_wrong_backward_breaks(monkeypatch, capsys):
    """Batch norm's gamma gradient off by 1 % (its input gradient right): only the gamma arrays fail."""
    from trainer import cli

    backward = BatchNorm.backward

    def gamma_off(self, grad_out):
        grad_in = backward(self, grad_out)
        self.grads["gamma"] *= 1.01
        return grad_in

    monkeypatch.setattr(BatchNorm, "backward", gamma_off)
    assert cli.main(["gradcheck", "--hidden", "32", "16", "--batchnorm", "--samples", "5"]) == 1
    out = capsys.readouterr().out
    assert [name for name, (_, _, result) in gradcheck_rows(out).items() if result == "FAIL"] == ["bn1.gamma",
                                                                                                  "bn2.gamma"]
    assert "GRADIENT CHECK FAILED" in out


def test_gradcheck_honours_a_config_files_network_and_dataset(tmp_path, capsys):
    """The layers come from the config file, the input and output sizes from the dataset it names."""
    from trainer import cli

    rng = np.random.default_rng(0)
    data = tmp_path / "blobs.npz"
    np.savez(data, x=rng.standard_normal((60, 7)).astype(np.float32), y=rng.integers(0, 3, 60))
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "npz"\ndata_path = "{data}"\nhidden = [6, 5]\nactivation = "tanh"\n'
                      'init = "xavier_normal"\ndropout = 0.5\nseed = 4\n')
    assert cli.main(["gradcheck", "--config", str(config), "--samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "at 3 entries sampled at random" in out and "(seed 4)" in out
    assert "Dense(7 -> 6, init=xavier_normal)" in out and "(act1): Activation(tanh)" in out
    assert "(dropout2): Dropout(rate=0.5)" in out
    assert {name: shape for name, (shape, _, _) in gradcheck_rows(out).items()} == {
        "dense1.weight": "7x6", "dense1.bias": "6", "dense2.weight": "6x5", "dense2.bias": "5",
        "dense3.weight": "5x3", "dense3.bias": "3"}


def test_gradcheck_takes_a_train_command_line_as_it_is(tmp_path, capsys):
    """Its help promises that: where the run would go (--publish, --registry, --output) is taken and changes
    nothing, and nothing is written there."""
    from trainer import cli

    train_line = ["--hidden", "32", "16", "--batchnorm", "--dropout", "0.2", "--lr", "1e-3", "--epochs", "20",
                  "--samples", "3"]
    registry, output = tmp_path / "models", tmp_path / "run"
    assert cli.main(["gradcheck", *train_line]) == 0
    alone = gradcheck_rows(capsys.readouterr().out)
    for destination in (["--publish"], ["--publish", "--registry", str(registry)], ["--output", str(output)]):
        assert cli.main(["gradcheck", *train_line, *destination]) == 0, capsys.readouterr().err
        assert gradcheck_rows(capsys.readouterr().out) == alone
    assert not registry.exists() and not output.exists()


def test_gradcheck_refuses_samples_without_a_network(capsys):
    from trainer import cli

    assert cli.main(["gradcheck", "--samples", "5"]) == 2
    assert "--samples" in capsys.readouterr().err


def test_a_regression_network_checked_without_a_dataset_has_the_one_output_train_builds(capsys):
    """train predicts one target: --task-kind regression gives one output, and --outputs 3 beside it,
    a network train never builds, is refused rather than checked."""
    from trainer import cli

    assert cli.main(["gradcheck", "--task-kind", "regression", "--inputs", "5", "--hidden", "4",
                     "--samples", "3"]) == 0
    assert "dense2.weight" in capsys.readouterr().out
    assert cli.main(["summary", "--task-kind", "regression", "--inputs", "5", "--hidden", "4"]) == 0
    assert "Dense(4 -> 1, init=he_normal)" in capsys.readouterr().out
    assert cli.main(["gradcheck", "--task-kind", "regression", "--outputs", "3", "--hidden", "4"]) == 2
    assert ("--outputs 3 with --task-kind regression: a regression network here has one output"
            in capsys.readouterr().err)


@pytest.mark.parametrize("command", ["summary", "gradcheck"])
def test_a_classifier_of_one_output_is_told_what_to_give_instead(command, capsys):
    """--outputs 1 without --task-kind was refused as "a classifier needs at least 2 outputs", which left the
    learner to find that --task-kind regression is what gives a network of one output."""
    from trainer import cli

    assert cli.main([command, "--inputs", "5", "--hidden", "4", "--outputs", "1"]) == 2
    assert capsys.readouterr().err == ("error: --outputs 1: a classifier has one output per class, 2 or more: give "
                                       "--outputs 2 or more, or --task-kind regression for a network of one output\n")
