"""Parity of stylegen_trt.runtime.schedulers with diffusers' DDPM / DDIM / DPM-Solver++ schedulers.

Both sides run the same NumPy fake model on the same latent (and, for DDPM, the same noise),
so any difference comes from the scheduler maths alone.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler  # noqa: E402
from diffusers.schedulers import scheduling_ddpm  # noqa: E402

from stylegen_trt.models.loaders import SD15_SCHEDULER_CONFIG  # noqa: E402
from stylegen_trt.runtime import schedulers as S  # noqa: E402

# diffusers 0.42's DPM scheduler calls np.array(tensor) in a way NumPy 2 deprecates; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SD_CONFIG = SD15_SCHEDULER_CONFIG  # SD 1.5's scheduler_config.json, as the tiny model writes it
DIFFUSERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmpp": DPMSolverMultistepScheduler}
TOL = 1e-5
MAX_DIFF: dict[str, float] = {}  # worst per-step difference seen per sampler (for reports)

VARIANTS = {
    "sd": {},
    "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "trailing": {"timestep_spacing": "trailing"},
    "linspace": {"timestep_spacing": "linspace"},
    "leading": {"timestep_spacing": "leading"},
    "v_pred": {"prediction_type": "v_prediction"},
    "clip": {"clip_sample": True, "clip_sample_range": 1.5},
    "alpha_one_offset0": {"set_alpha_to_one": True, "steps_offset": 0},
}


def sd(**overrides):
    return {**SD_CONFIG, **overrides}


_FIELD = np.random.default_rng(1234).standard_normal((2, 4, 8, 8), dtype=np.float32)


def _model_schedule():
    # The fake network's own notion of abar_t (SD's schedule, float64), independent of the code
    # under test. For the "linear" variant the network and the sampler disagree, which is fine:
    # it only has to be a deterministic function of (x, t).
    b = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    return np.cumprod(1 - b)


_ABAR = _model_schedule()
_MU = (0.8 * _FIELD).astype(np.float32)
_S2 = 0.25  # data variance
# Exact E[eps | x_t] for data ~ N(mu, s2 I): sqrt(1-a) (x - sqrt(a) mu) / (a s2 + 1 - a).
_C1 = (np.sqrt(1 - _ABAR) / (_ABAR * _S2 + 1 - _ABAR)).astype(np.float32)
_C2 = (np.sqrt(1 - _ABAR) * np.sqrt(_ABAR) / (_ABAR * _S2 + 1 - _ABAR)).astype(np.float32)


def fake_model(x: np.ndarray, t: int) -> np.ndarray:
    """A real denoiser at toy scale: the optimal eps-predictor for Gaussian data, in float32.

    Latents stay O(1) like SD's, so float32 rounding is measured at a realistic scale.
    Both the NumPy and the diffusers loop call this very function.
    """
    assert x.dtype == np.float32
    return _C1[t] * x - _C2[t] * _MU


def stress_model(x: np.ndarray, t: int) -> np.ndarray:
    """eps = 0.3 x + 0.1 sin(t/50) + field: under-predicts noise, so x0 estimates reach ~1e2
    and final latents ~25, amplifying ulp-level differences; compared relative to that scale."""
    assert x.dtype == np.float32
    return np.float32(0.3) * x + np.float32(0.1 * math.sin(t / 50)) + _FIELD


def initial_latent(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 4, 8, 8), dtype=np.float32)


def run_diffusers(name: str, cfg: dict, steps: int, x: np.ndarray, model=fake_model):
    """Whole trajectory through diffusers' scheduler; returns (timesteps, [x after each step])."""
    sched = DIFFUSERS[name].from_config(cfg)
    sched.set_timesteps(steps)
    sample = torch.from_numpy(x.copy())
    traj = []
    for t in sched.timesteps:
        eps = torch.from_numpy(model(sample.numpy(), int(t)))
        sample = sched.step(eps, t, sample).prev_sample
        assert sample.dtype == torch.float32
        traj.append(sample.numpy().copy())
    return sched.timesteps.numpy(), traj


def run_numpy(name: str, cfg: dict, steps: int, x: np.ndarray, rng=None, model=fake_model):
    traj, ts = [], []

    def cb(i, t, xi):
        assert i == len(traj)
        ts.append(t)
        traj.append(xi.copy())

    out = S.sample(name, model, x, S.SchedulerConfig.from_dict(cfg), steps, rng, callback=cb)
    return out, np.array(ts, dtype=np.int64), traj


@pytest.fixture
def shared_ddpm_noise(monkeypatch):
    """Make diffusers' DDPM draw its variance noise from a NumPy Generator, like ours does.

    DDPMScheduler.step has no variance_noise argument; it calls randn_tensor from its own
    module namespace, so that is the name to patch.
    """
    calls = []

    def install(seed: int):
        rng = np.random.default_rng(seed)

        def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
            calls.append(tuple(shape))
            return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))

        monkeypatch.setattr(scheduling_ddpm, "randn_tensor", fake_randn)
        return calls

    return install


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("variant", ["sd", "linear"])
def test_betas_and_alphas_cumprod_match(variant):
    cfg = sd(**VARIANTS[variant])
    ref = DDPMScheduler.from_config(cfg)
    b, ac = S.betas(S.SchedulerConfig.from_dict(cfg)), S.alphas_cumprod(S.SchedulerConfig.from_dict(cfg))
    assert b.dtype == np.float32 and ac.dtype == np.float32
    # torch.linspace compiles to an FMA on x86-64/arm64; allow 1 ulp should a build not fuse.
    np.testing.assert_allclose(b, ref.betas.numpy(), rtol=2e-7, atol=0)
    np.testing.assert_allclose(ac, ref.alphas_cumprod.numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", S.SAMPLERS)
@pytest.mark.parametrize("spacing", [None, "leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
def test_timesteps_match(name, spacing, offset):
    cfg = sd(steps_offset=offset, **({"timestep_spacing": spacing} if spacing else {}))
    config = S.SchedulerConfig.from_dict(cfg)
    sched = DIFFUSERS[name].from_config(cfg)
    for steps in (1, 2, 3, 7, 10, 20, 25, 50, 61, 100, 999, 1000):
        sched.set_timesteps(steps)
        ts = S.timesteps(name, config, steps)
        assert ts.dtype == np.int64
        np.testing.assert_array_equal(ts, sched.timesteps.numpy(), err_msg=f"{name} {spacing} steps={steps}")


# --------------------------------------------------------------------------- trajectories


def _assert_parity(name, cfg, steps, ours, ts, traj, ref_ts, ref_traj, tol=TOL):
    np.testing.assert_array_equal(ts, ref_ts)
    assert len(traj) == len(ref_traj) == len(ref_ts)
    assert ours.dtype == np.float32 and ours.shape == ref_traj[-1].shape
    np.testing.assert_array_equal(ours, traj[-1])
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(traj, ref_traj)]
    MAX_DIFF[name] = max(MAX_DIFF.get(name, 0.0), *diffs)
    assert max(diffs) <= tol, f"{name} steps={steps} cfg={cfg}: per-step max abs diff {diffs}"


@pytest.mark.parametrize("steps", [7, 10, 50])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", ["ddim", "dpmpp"])
def test_deterministic_trajectory_parity(name, variant, steps):
    cfg = sd(**VARIANTS[variant])
    x = initial_latent(steps)
    ref_ts, ref_traj = run_diffusers(name, cfg, steps, x)
    ours, ts, traj = run_numpy(name, cfg, steps, x)
    _assert_parity(name, cfg, steps, ours, ts, traj, ref_ts, ref_traj)


@pytest.mark.parametrize("steps", [7, 10, 50])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ddpm_trajectory_parity(variant, steps, shared_ddpm_noise):
    cfg = sd(**VARIANTS[variant])
    x = initial_latent(steps)
    calls = shared_ddpm_noise(seed=99)
    ref_ts, ref_traj = run_diffusers("ddpm", cfg, steps, x)
    n_ref_draws = len(calls)
    ours, ts, traj = run_numpy("ddpm", cfg, steps, x, rng=np.random.default_rng(99))
    _assert_parity("ddpm", cfg, steps, ours, ts, traj, ref_ts, ref_traj)
    # Noise is drawn exactly at t > 0 (with linspace spacing the last step is t=0: no draw).
    assert n_ref_draws == int(np.sum(ref_ts > 0))
    assert all(shape == x.shape for shape in calls)


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("name", S.SAMPLERS)
def test_stress_model_parity_relative_to_scale(name, steps, shared_ddpm_noise):
    shared_ddpm_noise(seed=11)
    x = initial_latent(steps)
    ref_ts, ref_traj = run_diffusers(name, SD_CONFIG, steps, x, model=stress_model)
    ours, ts, traj = run_numpy(name, SD_CONFIG, steps, x, rng=np.random.default_rng(11), model=stress_model)
    scale = max(float(np.max(np.abs(r))) for r in ref_traj)
    assert scale > 10  # the point of this model: latents far larger than SD's
    _assert_parity(name + "/stress", SD_CONFIG, steps, ours, ts, traj, ref_ts, ref_traj, tol=2e-6 * scale)


@pytest.mark.parametrize("name", S.SAMPLERS)
def test_single_step(name, shared_ddpm_noise):
    shared_ddpm_noise(seed=5)
    x = initial_latent(1)
    ref_ts, ref_traj = run_diffusers(name, SD_CONFIG, 1, x)
    ours, ts, traj = run_numpy(name, SD_CONFIG, 1, x, rng=np.random.default_rng(5))
    _assert_parity(name, SD_CONFIG, 1, ours, ts, traj, ref_ts, ref_traj)


def test_ddim_targets_t_minus_ratio_not_next_timestep():
    # The diffusers quirk we reproduce: with trailing spacing and 7 steps the schedule goes
    # 999 -> 856 but DDIM steps to abar at 999 - 1000 // 7 = 857.
    config = S.SchedulerConfig(timestep_spacing="trailing")
    assert S.timesteps("ddim", config, 7)[:2].tolist() == [999, 856]
    sched = DDIMScheduler.from_config(sd(timestep_spacing="trailing"))
    sched.set_timesteps(7)
    x = initial_latent(3)
    eps = fake_model(x, 999)
    ref = sched.step(torch.from_numpy(eps), 999, torch.from_numpy(x)).prev_sample.numpy()
    ac = S.alphas_cumprod(config)
    x0 = (x - np.sqrt(1 - ac[999]) * eps) / np.sqrt(ac[999])
    expected = np.sqrt(ac[857]) * x0 + np.sqrt(1 - ac[857]) * eps
    np.testing.assert_allclose(ref, expected, atol=1e-6)
    first = []
    S.sample_ddim(fake_model, x, config, 7, callback=lambda i, t, xi: first.append(xi) if i == 0 else None)
    np.testing.assert_allclose(first[0], expected, atol=1e-6)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", S.SAMPLERS)
def test_deterministic_and_input_not_mutated(name):
    x = initial_latent(7)
    x_before = x.copy()
    a = S.sample(name, fake_model, x, S.SchedulerConfig(), 10, np.random.default_rng(3))
    b = S.sample(name, fake_model, x, S.SchedulerConfig(), 10, np.random.default_rng(3))
    assert a.dtype == np.float32 and a.shape == x.shape
    assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(x, x_before)
    if name == "ddpm":
        c = S.sample(name, fake_model, x, S.SchedulerConfig(), 10, np.random.default_rng(4))
        assert not np.array_equal(a, c)


def test_denoiser_cannot_mutate_caller_input():
    x = initial_latent(8)
    x_before = x.copy()

    def nasty(xt, t):
        eps = fake_model(xt, t)
        xt *= 0  # a denoiser scribbling on its input must not reach the caller's array
        return eps

    S.sample_ddim(nasty, x, S.SchedulerConfig(), 3)
    np.testing.assert_array_equal(x, x_before)


def test_dpmpp_says_it_ignores_clip_sample(caplog):
    x = initial_latent(10)
    plain = S.sample_dpmpp_2m(fake_model, x, S.SchedulerConfig(), 5)
    with caplog.at_level("WARNING", logger=S.__name__):
        clipped = S.sample_dpmpp_2m(fake_model, x, S.SchedulerConfig(clip_sample=True), 5)
    assert "clip_sample" in caplog.text
    np.testing.assert_array_equal(plain, clipped)  # as in diffusers, which has no such option


def test_float64_input_gives_float32():
    x = initial_latent(9).astype(np.float64)
    assert S.sample_dpmpp_2m(fake_model, x, S.SchedulerConfig(), 4).dtype == np.float32


def test_config_from_dict_and_roundtrip():
    config = S.SchedulerConfig.from_dict(SD_CONFIG)
    assert config == S.SchedulerConfig()
    assert S.SchedulerConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["timestep_spacing"] is None
    # Keys diffusers writes with their neutral value are accepted.
    S.SchedulerConfig.from_dict(
        sd(thresholding=False, rescale_betas_zero_snr=False, variance_type="fixed_small", solver_order=2,
           algorithm_type="dpmsolver++", use_karras_sigmas=False, lambda_min_clipped=-math.inf,
           final_sigmas_type="zero", lower_order_final=False, euler_at_final=True, timestep_spacing="trailing")
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"trained_betas": [0.1] * 1000},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"beta_schedule": "sigmoid"},
        {"prediction_type": "flow_prediction"},
        {"timestep_spacing": "karras"},
        {"thresholding": True},
        {"rescale_betas_zero_snr": True},
        {"variance_type": "learned_range"},
        {"solver_order": 3},
        {"algorithm_type": "sde-dpmsolver++"},
        {"solver_type": "heun"},
        {"final_sigmas_type": "sigma_min"},
        {"use_karras_sigmas": True},
        {"lambda_min_clipped": -5.1},
        {"steps_offset": -1},
        {"num_train_timesteps": 1},
        {"clip_sample_range": 0.0},
        {"clip_sample": "yes"},
        {"beta_start": 0.02, "beta_end": 0.01},
    ],
)
def test_unsupported_config_raises(bad):
    with pytest.raises(ValueError):
        S.SchedulerConfig.from_dict(sd(**bad))


def test_bad_sampler_name():
    with pytest.raises(ValueError, match="ddpm, ddim, dpmpp"):
        S.sample("euler", fake_model, initial_latent(), S.SchedulerConfig(), 10, None)
    with pytest.raises(ValueError):
        S.timesteps("pndm", S.SchedulerConfig(), 10)


@pytest.mark.parametrize("name", S.SAMPLERS)
@pytest.mark.parametrize("steps", [0, -3, 1001, 2.5, True])
def test_bad_steps(name, steps):
    with pytest.raises(ValueError):
        S.sample(name, fake_model, initial_latent(), S.SchedulerConfig(), steps, np.random.default_rng(0))
    with pytest.raises(ValueError):
        S.timesteps(name, S.SchedulerConfig(), steps)


@pytest.mark.parametrize(
    ("name", "cfg", "steps"),
    [
        ("ddim", {}, 1000),  # leading + steps_offset 1 reaches t = 1000
        ("ddpm", {}, 1000),
        ("dpmpp", {"timestep_spacing": "leading"}, 999),
        ("ddim", {"timestep_spacing": "trailing"}, 61),  # diffusers' schedule ends in t = -1
        ("dpmpp", {"timestep_spacing": "trailing"}, 61),
    ],
)
def test_out_of_range_schedule_raises(name, cfg, steps):
    config = S.SchedulerConfig.from_dict(sd(**cfg))
    ts = S.timesteps(name, config, steps)
    assert ts.min() < 0 or ts.max() >= 1000  # faithful to diffusers...
    with pytest.raises(ValueError, match="outside"):  # ...but never sampled
        S.sample(name, fake_model, initial_latent(), config, steps, np.random.default_rng(0))


def test_ddpm_requires_generator():
    with pytest.raises(ValueError, match="Generator"):
        S.sample_ddpm(fake_model, initial_latent(), S.SchedulerConfig(), 5, None)


def test_denoiser_shape_checked():
    with pytest.raises(ValueError, match="shape"):
        S.sample_ddim(lambda x, t: x[:1], initial_latent(), S.SchedulerConfig(), 5)


def test_import_pulls_in_neither_torch_nor_diffusers():
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, stylegen_trt.runtime.schedulers\n"
        "bad = sorted(m for m in ('torch', 'diffusers') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
