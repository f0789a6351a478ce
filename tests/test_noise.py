"""Noise sources (engines/noise.py): A1111's NV noise bit for bit, the CPU noise dreamshell has always
made, GPU noise refused off CUDA, per-image streams with ENSD, and diffusers' step noise taken from them.

The NV vectors were made once by running A1111's own `modules/rng_philox.py` (1.10, as mirrored in
lllyasviel/stable-diffusion-webui-forge) with numpy, outside this repository: float32 bits at a few
indices and the sha256 of the whole float32 array, for each seed, shape and draw (offset)."""

import hashlib

import numpy as np
import pytest

from dreamshell.engines import noise

A1111_NV = [  # (seed, shape, draw, indices, float32 bits there, sha256 of the whole array)
    (0, (4, 8, 8), 0, (0, 1, 2, 3, 135, 255), (0xbf6cb6ad, 0xbed9c6af, 0xc02934c5, 0x3e14ab15, 0xbf6710c7, 0xbf58bebe),
     "cd5623613c17b197c7658a450abd8726964736a0aaf29aa37fe40e370d94f78c"),
    (0, (4, 8, 8), 1, (0, 1, 2, 3, 135, 255), (0x3e392a6c, 0xbf0d6117, 0x3f6c7f09, 0xbf3c2704, 0xbed74d11, 0x3e48fc73),
     "df637e52c031452d08f705b6ac14aebd9b980f3afc0a6906e63c861d1c4cb497"),
    (0, (1, 4, 64, 64), 0, (0, 1, 2, 3, 8199, 16383), (0xbf6cb6ad, 0xbed9c6af, 0xc02934c5, 0x3e14ab15, 0xbe2ba343, 0xc03d1383),
     "a4acb2fcf4d688e9300f25ebfdc48dad0005ed99daa99aa5791fa93cab507537"),
    (0, (4, 96, 64), 0, (0, 1, 2, 3, 12295, 24575), (0xbf6cb6ad, 0xbed9c6af, 0xc02934c5, 0x3e14ab15, 0x3f070ed5, 0xbf8ecf2f),
     "8e2a9c72e46e2961277ac42e398018647de5b04f32bc70ed88de8eb41b4ce5fe"),
    (1, (4, 8, 8), 0, (0, 1, 2, 3, 135, 255), (0xbe97b1ba, 0x402b4aed, 0xbe103a0a, 0xbf58169d, 0x3e4fa97c, 0x3fda8a21),
     "bae7e090277d68ac37018a97806d8cf9f2ebca5ba600d91f7e4f36d823e5b8d5"),
    (1, (4, 8, 8), 1, (0, 1, 2, 3, 135, 255), (0xbf224cc1, 0xbf24a440, 0xbf245b01, 0xbfb93a9a, 0x3ed4f540, 0x3e243fa5),
     "cdb6637c05416fe5fecea12e614c6b6694f8d149227853b6d035a46686439107"),
    (1, (1, 4, 64, 64), 0, (0, 1, 2, 3, 8199, 16383), (0xbe97b1ba, 0x402b4aed, 0xbe103a0a, 0xbf58169d, 0x3e470341, 0x3f3bfef8),
     "40eb9170127608c958cba34cfb01b0e2a658d4777c3cda9033fb2cde0b7b84e8"),
    (1, (4, 96, 64), 0, (0, 1, 2, 3, 12295, 24575), (0xbe97b1ba, 0x402b4aed, 0xbe103a0a, 0xbf58169d, 0xbf9625cf, 0xbe601197),
     "2224daa48fa986904fd89e7a08bc9fe4f175fcc7d5604146adcd30fa12cfb56a"),
    (42, (4, 8, 8), 0, (0, 1, 2, 3, 135, 255), (0x3e46ace2, 0x400a53f3, 0xbe302e20, 0x3f595bff, 0x3fdc1d00, 0xbfe68645),
     "b2749010a0a9a1c0f4a7737c7d43eac7cb641306021e7032c9dc88320e1e4302"),
    (42, (4, 8, 8), 1, (0, 1, 2, 3, 135, 255), (0x3e0e7a0f, 0xbddda06f, 0xbf37a8fb, 0x3f41b3ba, 0xbf897c9e, 0xbf238de6),
     "5f2b7b4329eb06e41f08ac977bb231d391266f08f8fcf599599cc542845748a6"),
    (42, (1, 4, 64, 64), 0, (0, 1, 2, 3, 8199, 16383), (0x3e46ace2, 0x400a53f3, 0xbe302e20, 0x3f595bff, 0xbed3b87b, 0x3da9f5eb),
     "df16496e26f1a0334ae7b9c3dada2d870d3a7e13235357d54102c39f463bb2c0"),
    (42, (4, 96, 64), 0, (0, 1, 2, 3, 12295, 24575), (0x3e46ace2, 0x400a53f3, 0xbe302e20, 0x3f595bff, 0xbf00cc5c, 0xbf965346),
     "86ef9b2bf46a9666ebd747c5530db0d44b91c45d305e38e7a4852c75fa4119ce"),
    (4294967295, (4, 8, 8), 0, (0, 1, 2, 3, 135, 255), (0xbd0be9b9, 0x3ec7e868, 0x3fc37c72, 0x3e3f7a68, 0x3e285ccd, 0x3db3af46),
     "823abbf3c63dfdc1b72e3db9b8448aac20108d8468a91addf5d23a07209d9786"),
    (4294967295, (4, 8, 8), 1, (0, 1, 2, 3, 135, 255), (0xbf601649, 0x3ee6a853, 0xbde1794b, 0xbe81c190, 0x3e9f40ce, 0xbf8d98c2),
     "c431c25cd26486e8abce2b149fe396b4092dd9e530049dbb86d88586766d2b6e"),
    (4294967295, (1, 4, 64, 64), 0, (0, 1, 2, 3, 8199, 16383), (0xbd0be9b9, 0x3ec7e868, 0x3fc37c72, 0x3e3f7a68, 0xbfc6a2ec, 0xbf907167),
     "13452eadcf6693ee7c59ab22082b5aeb5cfa89c006b5389d9c345981b3cdc4ee"),
    (4294967295, (4, 96, 64), 0, (0, 1, 2, 3, 12295, 24575), (0xbd0be9b9, 0x3ec7e868, 0x3fc37c72, 0x3e3f7a68, 0x3fb3bbbd, 0xc01dc4d4),
     "a240471576890253d20aa2128df73a68531c0fe6acd74ce257bc6832a8b7ef5b"),
    (4294967296, (4, 8, 8), 0, (0, 1, 2, 3, 135, 255), (0xbc8ebebc, 0x3ef910ea, 0x3f48b74c, 0xbe448cd5, 0x3edc2cbd, 0xbfd559d5),
     "468519b2f6b6589b1788204d74888cc2e5b7ed4d9c7f8aa212f6c03191eeffa1"),
    (4294967296, (4, 8, 8), 1, (0, 1, 2, 3, 135, 255), (0x3ededfac, 0xbdf20462, 0x3e46dd1f, 0x3ec5c707, 0xbf743838, 0xbe8e3ac0),
     "b003d35fae20d5c595eafaded693ef5e3fe485f1f4512e17fd4b6f13edf8e3dc"),
    (4294967296, (1, 4, 64, 64), 0, (0, 1, 2, 3, 8199, 16383), (0xbc8ebebc, 0x3ef910ea, 0x3f48b74c, 0xbe448cd5, 0x3cc752c5, 0x3e1b5fa2),
     "3d8dbe9e6051d7ff3be66cb145a5bf1bcd880f0bb6941b56a461ab1fb96f783f"),
    (4294967296, (4, 96, 64), 0, (0, 1, 2, 3, 12295, 24575), (0xbc8ebebc, 0x3ef910ea, 0x3f48b74c, 0xbe448cd5, 0xbf76771b, 0x3e85908e),
     "4a82e1f91903e192eff7ee640ddc43d05d3854969539582ea5a5f53e85a5bbae"),
    (9223372036854775813, (4, 8, 8), 0, (0, 1, 2, 3, 135, 255), (0x3c8ad502, 0xbed9e448, 0xbf7d4b8d, 0x3f908881, 0x3f1776e1, 0x3fc0f2ce),
     "37eca69a1a00a723e932e7321ec1118dccb19aa2be6e7b6f6326492783ff3e1d"),
    (9223372036854775813, (4, 8, 8), 1, (0, 1, 2, 3, 135, 255), (0xbfa834c5, 0x3f06bb17, 0x3ecadf25, 0xc03dcee9, 0xbf44a02a, 0xc00f95d4),
     "821629d1286a1beec4be1de2baf73bd553489dec7f180be3ae3b27874e6bd6d7"),
    (9223372036854775813, (1, 4, 64, 64), 0, (0, 1, 2, 3, 8199, 16383), (0x3c8ad502, 0xbed9e448, 0xbf7d4b8d, 0x3f908881, 0x3f275ac2, 0x3e943758),
     "bf5e91bd476bfb46d5f8371622da1b905a9514491e82929a3a63a4165a07e651"),
    (9223372036854775813, (4, 96, 64), 0, (0, 1, 2, 3, 12295, 24575), (0x3c8ad502, 0xbed9e448, 0xbf7d4b8d, 0x3f908881, 0x3ebe1bb5, 0xbeb43c0e),
     "2af9667771861ba162da0ac8e883768f283828e1080620029217964c2a6e151a"),
]


@pytest.mark.parametrize("seed,shape,draw,indices,bits,digest", A1111_NV)
def test_nv_noise_equals_a1111_rng_philox_bit_for_bit(seed, shape, draw, indices, bits, digest):
    stream = noise.PhiloxStream(seed)
    for _ in range(draw):
        stream.randn(shape)
    out = stream.randn(shape)
    assert out.dtype == np.float32 and out.shape == shape
    flat = out.reshape(-1)
    assert tuple(int(flat[i].view(np.uint32)) for i in indices) == bits
    assert hashlib.sha256(out.tobytes()).hexdigest() == digest


def test_nv_noise_first_values_for_seed_0():
    # REFERENCE.md section 12 (the same as torch.randn on CUDA to five digits)
    assert np.allclose(noise.randn_like_cuda(0, (4,)), [-0.92466, -0.42534, -2.64385, 0.14518], atol=1e-5)


def test_nv_noise_depends_on_the_count_of_values_not_the_shape():
    a = noise.randn_like_cuda(7, (1, 4, 8, 16))
    assert np.array_equal(a.reshape(-1), noise.randn_like_cuda(7, (512,)))
    assert np.array_equal(noise.randn_like_cuda(7, (3,)), a.reshape(-1)[:3])


@pytest.mark.parametrize("counter,key,expected", [   # Random123's known answers (DEShawResearch/random123 kat_vectors)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox4x32_10_known_answers(counter, key, expected):
    out = noise.philox4x32(tuple(np.array([c], dtype=np.uint32) for c in counter), key)
    assert tuple(int(w[0]) for w in out) == expected


def test_box_muller_is_finite_at_the_ends_of_the_range():
    ends = np.array([0, 1, 0xFFFFFFFE, 0xFFFFFFFF], dtype=np.uint32)
    out = noise.box_muller_first(ends, ends)
    assert np.isfinite(out).all() and out.dtype == np.float32


def test_cpu_noise_is_the_seeded_cpu_generator_dreamshell_always_used():
    import torch
    shape = (4, 8, 12)
    want = torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(1234), dtype=torch.float32)
    got = noise.LatentNoise("cpu", [noise.ImageSeeds(1234)], shape).first()
    assert got.shape == (1, *shape) and torch.equal(got, want)


def test_variations_are_slerped_in_turn_as_before():
    import torch
    shape = (4, 8, 8)

    def draw(seed):
        return torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)

    want = noise.slerp(0.3, noise.slerp(0.1, draw(5), draw(6)), draw(7))
    got = noise.LatentNoise("cpu", [noise.ImageSeeds(5, ((6, 0.1), (7, 0.3)))], shape).first()
    assert torch.equal(got, want)
    assert not torch.equal(got, draw(5))


@pytest.mark.parametrize("rng", ["cpu", "nv"])
def test_each_image_of_a_batch_is_its_own_stream(rng):
    import torch
    shape = (4, 8, 8)
    batch = noise.LatentNoise(rng, [noise.ImageSeeds(1), noise.ImageSeeds(2)], shape)
    alone = [noise.LatentNoise(rng, [noise.ImageSeeds(s)], shape) for s in (1, 2)]
    for _ in range(3):
        assert torch.equal(batch.next(), torch.cat([a.next() for a in alone]))


def test_nv_later_draws_take_the_next_offset():
    import torch
    src = noise.LatentNoise("nv", [noise.ImageSeeds(42)], (4, 8, 8))
    assert torch.equal(src.first()[0], torch.from_numpy(noise.randn_like_cuda(42, (4, 8, 8), 0)))
    assert torch.equal(src.next()[0], torch.from_numpy(noise.randn_like_cuda(42, (4, 8, 8), 1)))
    assert torch.equal(src.next()[0], torch.from_numpy(noise.randn_like_cuda(42, (4, 8, 8), 2)))


def test_cpu_later_draws_continue_the_seed_generator():
    import torch
    g = torch.Generator("cpu").manual_seed(9)
    draws = [torch.randn((4, 8, 8), generator=g) for _ in range(3)]
    src = noise.LatentNoise("cpu", [noise.ImageSeeds(9)], (4, 8, 8))
    assert [torch.equal(src.next()[0], d) for d in draws] == [True, True, True]


@pytest.mark.parametrize("rng", ["cpu", "nv"])
def test_eta_noise_seed_delta_restarts_the_stream_at_seed_plus_delta(rng):
    import torch
    shape = (4, 8, 8)
    src = noise.LatentNoise(rng, [noise.ImageSeeds(100)], shape, ensd=31337)
    plain = noise.LatentNoise(rng, [noise.ImageSeeds(100)], shape)
    assert torch.equal(src.first(), plain.first())           # the seed's own noise is unchanged
    delta = noise.LatentNoise(rng, [noise.ImageSeeds(100 + 31337)], shape)
    assert torch.equal(src.next(), delta.next())              # step noise: the stream of seed + ENSD
    assert torch.equal(src.next(), delta.next())
    assert not torch.equal(noise.LatentNoise(rng, [noise.ImageSeeds(100)], shape, ensd=31337).next(), plain.next())


def test_gpu_noise_off_cuda_is_one_clear_line():
    with pytest.raises(noise.NoiseError) as e:
        noise.LatentNoise("gpu", [noise.ImageSeeds(1)], (4, 8, 8), device="cpu")
    text = str(e.value)
    assert "\n" not in text and "--rng gpu" in text and "CUDA" in text and "--rng nv" in text


def test_unknown_source_is_one_clear_line():
    with pytest.raises(noise.NoiseError, match=r"--rng mt19937: unknown noise source; use one of cpu, gpu, nv"):
        noise.check_source("mt19937", "cpu")


def _euler_a(steps=4):
    from diffusers import EulerAncestralDiscreteScheduler
    s = EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    s.set_timesteps(steps)
    return s


def _run_steps(scheduler, x, generator=None):
    import torch
    out = []
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x, generator=generator).prev_sample
        out.append(x)
    return out


def test_ancestral_step_noise_comes_from_the_source():
    import torch
    shape = (4, 8, 8)
    x = torch.ones((1, *shape))
    # with model output 0 (epsilon) the Euler a step is x + noise * sigma_up: recover the noise
    sched = _euler_a()
    src = noise.LatentNoise("nv", [noise.ImageSeeds(3)], shape)
    src.first()
    with noise.step_noise(sched, src):
        got = _run_steps(sched, x, generator=torch.Generator().manual_seed(0))
    ref = _euler_a()
    sigmas = ref.sigmas
    prev = x
    for i, out in enumerate(got[:-1]):
        s, s_next = sigmas[i], sigmas[i + 1]
        up = (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5
        drawn = (out - prev) / up
        want = torch.from_numpy(noise.randn_like_cuda(3, shape, i + 1))[None]
        assert torch.allclose(drawn, want, atol=1e-3), i
        prev = out


def test_step_noise_puts_the_scheduler_module_back():
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as module
    before = module.randn_tensor
    sched = _euler_a()
    with pytest.raises(RuntimeError):
        with noise.step_noise(sched, noise.LatentNoise("cpu", [noise.ImageSeeds(1)], (4, 8, 8))):
            assert module.randn_tensor is not before
            raise RuntimeError("stop")
    assert module.randn_tensor is before


def test_without_step_noise_diffusers_draws_from_the_generator():
    # the control for the test above: the swap is what changes the noise
    import torch
    shape = (4, 8, 8)
    x = torch.ones((1, *shape))
    a = _run_steps(_euler_a(), x, generator=torch.Generator().manual_seed(0))
    src = noise.LatentNoise("cpu", [noise.ImageSeeds(0)], shape)
    src.first()
    sched = _euler_a()
    with noise.step_noise(sched, src):
        b = _run_steps(sched, x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a[0], b[0])


def _sde_multistep(steps=5):
    from diffusers import DPMSolverMultistepScheduler
    s = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    algorithm_type="sde-dpmsolver++")
    s.set_timesteps(steps)
    return s


def test_dpmpp_2m_sde_takes_brownian_noise_seeded_with_the_image_seed():
    pytest.importorskip("torchsde")
    import torch
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler
    shape = (4, 8, 8)
    x = torch.ones((1, *shape))
    sched = _sde_multistep()
    src = noise.LatentNoise("cpu", [noise.ImageSeeds(77)], shape)
    src.first()
    with noise.step_noise(sched, src):
        got = _run_steps(sched, x, generator=torch.Generator().manual_seed(0))
    # the same steps given k-diffusion's Brownian increments for seed 77 (torchsde draws CPU noise as A1111's CPU rng)
    ref = _sde_multistep()
    sig = ref.sigmas
    tree = BrownianTreeNoiseSampler(x, float(sig[sig > 0].min()), float(sig.max()), 77)
    want, y = [], x
    for i, t in enumerate(ref.timesteps):
        vn = tree(sig[i], sig[i + 1]) if float(sig[i + 1]) > 0 else torch.zeros_like(x)
        y = ref.step(torch.zeros_like(y), t, y, variance_noise=vn).prev_sample
        want.append(y)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    plain = _run_steps(_sde_multistep(), x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(plain[0], got[0])


def test_brownian_noise_uses_the_source_normals():
    pytest.importorskip("torchsde")
    import torch
    shape = (4, 8, 8)
    x = torch.ones((1, *shape))
    runs = {}
    for rng in ("cpu", "nv", "nv"):
        sched = _sde_multistep()
        src = noise.LatentNoise(rng, [noise.ImageSeeds(5)], shape)
        src.first()
        with noise.step_noise(sched, src):
            runs.setdefault(rng, []).append(_run_steps(sched, x)[-2])
    assert torch.equal(runs["nv"][0], runs["nv"][1])
    assert not torch.equal(runs["cpu"][0], runs["nv"][0])


def test_an_img2img_pipeline_noises_its_init_image_with_the_first_draw():
    import torch
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as module
    from diffusers import StableDiffusionImg2ImgPipeline
    pipe = StableDiffusionImg2ImgPipeline.__new__(StableDiffusionImg2ImgPipeline)   # its class is what counts
    before = module.randn_tensor
    src = noise.LatentNoise("nv", [noise.ImageSeeds(8)], (4, 8, 8))
    sched = _euler_a()
    with noise.step_noise(sched, src, pipe=pipe):
        drawn = module.randn_tensor((1, 4, 8, 8), generator=torch.Generator().manual_seed(8), device="cpu",
                                    dtype=torch.float32)
    assert torch.equal(drawn[0], torch.from_numpy(noise.randn_like_cuda(8, (4, 8, 8))))
    assert module.randn_tensor is before
