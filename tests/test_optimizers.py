"""Optimiser update rules against steps worked out by hand, and the learning-rate schedules."""

import math

import numpy as np
import pytest

from trainer.network import build_mlp
from trainer.optimizers import SGD, Adam, AdamW, Momentum, clip_grad_norm, get_optimizer
from trainer.schedules import get_schedule


def run(optimizer, grads_per_step, start=(1.0, -2.0), dtype=np.float64, name="dense1.weight"):
    """Apply the optimiser to one parameter with the given gradient at each step; return it."""
    param = np.array(start, dtype=dtype)
    for g in grads_per_step:
        optimizer.step({name: param}, {name: np.array(g, dtype=dtype)})
    return param


# --- update rules -------------------------------------------------------------------------

def test_sgd_step():
    # p - lr * g = [1 - 0.1 * 0.5, -2 - 0.1 * -1]
    assert run(SGD(lr=0.1), [[0.5, -1.0]]) == pytest.approx([0.95, -1.9])


def test_sgd_l2_weight_decay_applies_to_weights_not_biases():
    # weight: g + wd * p = [0.5 + 0.1 * 1, -1 + 0.1 * -2] = [0.6, -1.2] -> [1 - 0.06, -2 + 0.12]
    assert run(SGD(lr=0.1, weight_decay=0.1), [[0.5, -1.0]]) == pytest.approx([0.94, -1.88])
    bias = run(SGD(lr=0.1, weight_decay=0.1), [[0.5, -1.0]], name="dense1.bias")
    assert bias == pytest.approx([0.95, -1.9])
    gamma = run(SGD(lr=0.1, weight_decay=0.1), [[0.5, -1.0]], name="bn1.gamma")
    assert gamma == pytest.approx([0.95, -1.9])


def test_momentum_two_steps():
    # v1 = g1 = 1.0;           p1 = 1 - 0.1 * 1.0 = 0.9
    # v2 = 0.9 * 1.0 + 0.5 = 1.4; p2 = 0.9 - 0.1 * 1.4 = 0.76
    assert run(Momentum(lr=0.1, momentum=0.9), [[1.0], [0.5]], start=[1.0]) == pytest.approx([0.76])


def test_nesterov_two_steps():
    # v1 = 1.0; step1 = g1 + 0.9 * v1 = 1.9;  p1 = 1 - 0.19 = 0.81
    # v2 = 0.9 + 0.5 = 1.4; step2 = 0.5 + 0.9 * 1.4 = 1.76; p2 = 0.81 - 0.176 = 0.634
    opt = Momentum(lr=0.1, momentum=0.9, nesterov=True)
    assert run(opt, [[1.0], [0.5]], start=[1.0]) == pytest.approx([0.634])


def test_adam_two_steps():
    # lr 0.1, betas (0.9, 0.999), eps 1e-8, p0 = 1
    # t=1, g=0.5:   m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25
    #               p1 = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.900000002
    # t=2, g=-0.25: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225
    #               m_hat = 0.02 / 0.19 = 0.1052631579, v_hat = 0.00031225 / 0.001999 = 0.1562031016
    #               p2 = p1 - 0.1 * 0.1052631579 / (0.3952253807 + 1e-8) = 0.8733662987
    opt = Adam(lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    param = np.array([1.0])
    opt.step({"w": param}, {"w": np.array([0.5])})
    assert param == pytest.approx([0.900000002], rel=1e-12)
    opt.step({"w": param}, {"w": np.array([-0.25])})
    assert param == pytest.approx([0.8733662987078463], rel=1e-12)


def test_adam_epsilon_matters_for_tiny_gradients():
    # g = 1e-8: m_hat = 1e-8, sqrt(v_hat) = 1e-8 -> step = lr * 1e-8 / (1e-8 + 1e-8) = lr / 2
    assert run(Adam(lr=0.1, eps=1e-8), [[1e-8]], start=[1.0]) == pytest.approx([0.95], rel=1e-9)


def test_adamw_decouples_weight_decay():
    # p *= 1 - lr * wd = 0.99, then the Adam step of lr * sign(g) = 0.1: 0.890000002
    assert run(AdamW(lr=0.1, weight_decay=0.1), [[0.5]], start=[1.0]) == pytest.approx([0.890000002], rel=1e-12)
    # Adam with the same weight_decay is L2: g' = 0.5 + 0.1 * 1 = 0.6, step = 0.1 * 0.6 / (0.6 + 1e-8)
    assert run(Adam(lr=0.1, weight_decay=0.1), [[0.5]], start=[1.0]) == pytest.approx([1 - 0.06 / 0.60000001], rel=1e-12)
    # biases are not decayed
    assert run(AdamW(lr=0.1, weight_decay=0.1), [[0.5]], start=[1.0], name="dense1.bias") == \
        pytest.approx([0.900000002], rel=1e-12)


def test_clip_by_global_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}  # global norm 5
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    assert grads["a"] == pytest.approx([0.6, 0.0], rel=1e-5)
    assert grads["b"][0, 0] == pytest.approx(0.8, rel=1e-5)
    small = {"a": np.array([0.3, 0.4])}
    clip_grad_norm(small, 1.0)
    assert small["a"].tolist() == [0.3, 0.4]  # under the limit: untouched

    # entries whose squares overflow float32 are still clipped, not zeroed
    huge = {"a": np.array([3e19, 4e19], dtype=np.float32)}
    assert clip_grad_norm(huge, 1.0) == pytest.approx(5e19, rel=1e-6)
    assert huge["a"] == pytest.approx([0.6, 0.8], rel=1e-5)
    for bad in (np.nan, np.inf):
        with pytest.raises(FloatingPointError, match="the gradients are not finite"):
            clip_grad_norm({"a": np.array([1.0, bad], dtype=np.float32)}, 1.0)

    # through the optimiser: the clipped step is lr * g * 1 / 5
    opt = SGD(lr=1.0, clip_norm=1.0)
    param = np.array([0.0, 0.0])
    opt.step({"w": param}, {"w": np.array([3.0, 4.0])})
    assert param == pytest.approx([-0.6, -0.8], rel=1e-5)
    assert opt.last_grad_norm == pytest.approx(5.0)


def test_set_lr_takes_effect_immediately():
    opt = Momentum(lr=0.1, momentum=0.9)
    param = np.array([1.0])
    opt.step({"w": param}, {"w": np.array([1.0])})  # p = 0.9, v = 1
    opt.set_lr(0.0)
    opt.step({"w": param}, {"w": np.array([1.0])})
    assert param == pytest.approx([0.9])


@pytest.mark.parametrize("spec", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_float32_stays_float32_and_flat_path_matches_per_parameter_path(spec):
    """A network packs its parameters into one buffer and the optimiser updates it in one go;
    the result must equal updating the same arrays one by one, and stay float32 even when
    the learning rate is a NumPy float64 (as a schedule could return)."""
    net = build_mlp([5, 4, 3], seed=1)
    loose = {k: v.copy() for k, v in net.params().items()}  # separate arrays: the per-parameter path
    rng = np.random.default_rng(0)
    packed_opt = get_optimizer(spec, lr=np.float64(0.05), weight_decay=0.01, clip_norm=10.0)
    loose_opt = get_optimizer(spec, lr=np.float64(0.05), weight_decay=0.01, clip_norm=10.0)
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in loose.items()}
        for k, g in net.grads().items():
            g[...] = grads[k]
        packed_opt.step(net.params(), net.grads())
        loose_opt.step(loose, grads)
    assert packed_opt._flat is not None and loose_opt._flat is None
    for k, v in net.params().items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, loose[k])
    for state in packed_opt.state.values():
        assert all(a.dtype == np.float32 for a in state.values())


def test_get_optimizer_specs():
    opt = get_optimizer("adamw", lr=0.002, weight_decay=0.05)
    assert isinstance(opt, AdamW) and opt.lr == 0.002 and opt.weight_decay == 0.05
    nesterov = get_optimizer("nesterov", lr=0.1, momentum=0.8)
    assert isinstance(nesterov, Momentum) and nesterov.nesterov and nesterov.momentum == 0.8
    assert get_optimizer("momentum(momentum=0.5)", lr=0.1).momentum == 0.5
    assert get_optimizer("adam(betas=(0.8, 0.99))").betas == (0.8, 0.99)
    assert "AdamW(lr=0.002" in repr(opt)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        get_optimizer("rmsprop")
    with pytest.raises(ValueError, match="bad arguments"):
        get_optimizer("sgd", lr=0.1, betas=(0.9, 0.9))


# --- schedules ----------------------------------------------------------------------------

def test_constant_and_step_schedules():
    assert [get_schedule("constant", lr=0.1)(e) for e in (0, 5, 50)] == [0.1, 0.1, 0.1]
    step = get_schedule("step(step_size=2, gamma=0.5)", lr=0.1)
    assert [step(e) for e in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_cosine_schedule():
    cos = get_schedule("cosine", lr=1.0, total_epochs=4, min_lr=0.1)
    # min + (lr - min) * (1 + cos(pi * e / 4)) / 2
    expected = [1.0, 0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2, 0.55, 0.1 + 0.9 * (1 - math.sqrt(0.5)) / 2, 0.1, 0.1]
    assert [cos(e) for e in range(6)] == pytest.approx(expected)


def test_warmup_then_cosine():
    sched = get_schedule("cosine", lr=1.0, total_epochs=6, warmup_epochs=2)
    # ramp: lr * (e + 1) / (2 + 1), then cosine over the remaining 4 epochs
    assert [sched(e) for e in range(7)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2, 0.0])
    plain = get_schedule("warmup(epochs=3)", lr=0.4)
    assert [plain(e) for e in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])
    stepped = get_schedule("step(step_size=1, gamma=0.5)", lr=0.4, warmup_epochs=1)
    assert [stepped(e) for e in range(4)] == pytest.approx([0.2, 0.4, 0.2, 0.1])


def test_values_without_names_fill_the_parameters_the_trainer_does_not_give():
    """``step(5)`` means step_size=5: the trainer gives lr itself (Python gave 5 to lr, then refused lr)."""
    step = get_schedule("step(2, 0.5)", lr=0.1)
    assert [step(e) for e in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert get_schedule("cosine(0.1)", lr=1.0, total_epochs=4)(4) == pytest.approx(0.1)  # min_lr
    assert [get_schedule("warmup(3)", lr=0.4)(e) for e in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert get_optimizer("momentum(0.5)", lr=0.1).momentum == 0.5
    with pytest.raises(ValueError, match=r"3 values without names; it takes at most 2 \(step_size, gamma\)"):
        get_schedule("step(2, 0.5, 7)", lr=0.1)
    with pytest.raises(ValueError, match="step_size given both by position and by name"):
        get_schedule("step(2, step_size=3)", lr=0.1)


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        get_schedule("linear", lr=0.1)
    with pytest.raises(ValueError, match="total_epochs"):
        get_schedule("cosine", lr=0.1)
    with pytest.raises(ValueError, match="step_size must be a finite whole number, got 1.5"):
        get_schedule("step(step_size=1.5)", lr=0.1)  # was read as 1
    # was "get_schedule.<locals>.<lambda>() missing 1 required positional argument: 'epochs'"
    with pytest.raises(ValueError, match=r"^schedule 'warmup' needs epochs: give it as warmup\(epochs=\.\.\.\)$"):
        get_schedule("warmup", lr=0.1)


@pytest.mark.parametrize("spec", ["linear", "warmupp", "warmup_cosine"])
def test_an_unknown_schedule_is_told_every_schedule_there_is(spec):
    """The list left out warmup, and a name beginning with warmup was told that warmup was the only schedule."""
    with pytest.raises(ValueError, match=rf"^unknown schedule '{spec}'.*; known: constant, cosine, step, warmup$"):
        get_schedule(spec, lr=0.1)


def test_a_warmup_schedule_takes_a_whole_number_of_epochs():
    with pytest.raises(ValueError, match="epochs must be a finite whole number, got 2.5"):
        get_schedule("warmup(epochs=2.5)", lr=0.1)  # was read as 2


def test_a_warmup_schedule_refuses_a_second_warmup_length():
    """Both name the warm-up's length; the schedule's own silently won."""
    with pytest.raises(ValueError, match=r"warmup\(epochs=2\) sets the warm-up's length and so does "
                                         "warmup_epochs=3: give one"):
        get_schedule("warmup(epochs=2)", lr=0.1, warmup_epochs=3)


@pytest.mark.parametrize("spec, match", [
    ("cosine(total_epochs=5, min_lr=-0.01)", "cosine min_lr must be between 0 and the learning rate"),
    ("cosine(total_epochs=5, min_lr=0.5)", "cosine min_lr must be between 0 and the learning rate"),
    ("step(step_size=1, gamma=-0.5)", "step gamma must be > 0"),
    ("step(step_size=1, gamma=0)", "step gamma must be > 0"),
])
def test_a_schedule_that_would_make_the_learning_rate_negative_or_zero_is_refused(spec, match):
    """The config refuses lr <= 0; a schedule must not reach one either (training would climb the loss)."""
    with pytest.raises(ValueError, match=match):
        get_schedule(spec, lr=0.1)


def test_normal_initializer_needs_a_positive_std():
    from trainer.initializers import get_initializer

    with pytest.raises(ValueError, match="normal std must be > 0"):
        get_initializer("normal(std=-1)")


def test_nesterov_without_momentum_is_refused():
    """With momentum 0 the look-ahead has no velocity: it ran as plain SGD without a word (torch refuses it)."""
    with pytest.raises(ValueError, match=r"nesterov needs a momentum above 0 \(with 0 it is plain sgd\)"):
        get_optimizer("nesterov", lr=0.1, momentum=0.0)
    assert get_optimizer("momentum", lr=0.1, momentum=0.0).momentum == 0.0  # heavy ball at 0: SGD, as asked


@pytest.mark.parametrize("make", [lambda: Adam(lr=1e-3, betas=(0.9, 0.99)), lambda: AdamW(lr=1e-3, betas=(0.5, 0.99)),
                                  lambda: Momentum(lr=0.1, momentum=0.9), lambda: Momentum(lr=0.1, momentum=0.99)],
                         ids=["adam", "adamw-b1-0.5", "momentum", "momentum-0.99"])
def test_the_moments_of_a_weight_that_stops_learning_never_turn_subnormal(make):
    """A dead ReLU unit's weights get one last gradient, then zeros: their moments decay geometrically
    through float32's subnormal range, where each operation is microcode (an Adam step over a network
    full of them took 8 times as long). They are dropped once below 1e-30, before they get there."""
    net = build_mlp((4, 8, 2), seed=0)  # flat buffers, as in training
    params, grads = net.params(), net.grads()
    optimizer = make()
    tiny = np.finfo(np.float32).tiny
    rng = np.random.default_rng(0)
    for t in range(10_000):  # v (and a velocity) at 0.99 a step: subnormal after about 8,700 steps
        for grad in grads.values():
            grad[...] = rng.normal(size=grad.shape) if t == 0 else 0.0
        optimizer.step(params, grads)
        for state in optimizer.state.values():
            for key, moment in state.items():
                if key != "scratch":
                    assert not np.any((moment != 0) & (np.abs(moment) < tiny)), (t, key)
    assert all(np.all(moment == 0) for state in optimizer.state.values() for key, moment in state.items()
               if key != "scratch")  # every moment decayed to zero
