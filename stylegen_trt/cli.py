"""The `stylegen-trt` command line: export, build, generate, verify, info, train, eval, grid, bench, serve,
triton-repo.

Bad input is a one-line message on stderr and exit code 2 (never a traceback);
outputs are written atomically, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

try:  # recent typer vendors click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - typer on top of click
    from click.exceptions import NoArgsIsHelpError, UsageError

from stylegen_trt.errors import UserError

log = logging.getLogger("stylegen_trt")


def fail(message: str) -> None:
    one_line = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    typer.echo(f"error: {one_line}", err=True)
    raise typer.Exit(2)


def check_memory(memory: str) -> None:
    from typing import get_args

    from stylegen_trt.engines.base import Memory

    if memory not in get_args(Memory):
        fail(f"unknown --memory {memory!r}: choose fast (keep working memory between calls) or lean (free it)")


def engine_options(backend: str = "ort", precision: str = "auto", device: str = "auto", threads: Optional[int] = None,
                   memory: str = "fast", static=None, cuda_graph: bool = False):
    """EngineOptions from command-line values, each checked against its Literal. ``static``: the
    StaticShapes of `--static` (see ``static_shapes``)."""
    from typing import get_args

    from stylegen_trt.engines.base import Backend, Device, EngineOptions, Precision

    for label, value, allowed in (("--backend", backend, Backend), ("--precision", precision, Precision),
                                  ("--device", device, Device)):
        if value not in get_args(allowed):
            fail(f"unknown {label} {value!r}: choose one of {', '.join(get_args(allowed))}")
    check_memory(memory)
    if threads is not None and threads < 1:
        fail("--threads must be >= 1")
    if precision == "bf16" and backend != "openvino":
        fail("--precision bf16 needs --backend openvino: " + ("ONNX Runtime runs the bundle's fp32 graphs" if backend == "ort"
                                                              else "TensorRT builds fp16 or fp32 engines"))
    if precision == "fp16" and backend == "openvino":
        fail("--precision fp16 is TensorRT's: OpenVINO on the CPU runs fp32 or bf16 (auto: bf16 where the CPU has "
             "AVX512-BF16 or AMX)")
    if cuda_graph and backend != "trt":
        fail("--static and --cuda-graph are TensorRT options: add --backend trt")
    if static is not None and backend not in ("trt", "openvino"):
        fail("--static and --cuda-graph are TensorRT options: add --backend trt (--static: or --backend openvino)")
    return EngineOptions(backend=backend, device=device, threads=threads, memory=memory, precision=precision,
                         static=static, cuda_graph=cuda_graph)


def static_shapes(manifest: dict, height: Optional[int], width: Optional[int], n: int):
    """StaticShapes for engines built for exactly one image size (default: the bundle's native size)
    and ``n`` images per generation, checked against the bundle's sizes."""
    from stylegen_trt.engines.base import StaticShapes

    sizes = manifest["sizes"]
    height, width = height or sizes["native"], width or sizes["native"]
    for label, value in (("height", height), ("width", width)):
        if value % sizes["multiple"] or not sizes["min"] <= value <= sizes["max"]:
            fail(f"--{label} {value} must be a multiple of {sizes['multiple']} in {sizes['min']}..{sizes['max']} "
                 "for this bundle")
    if not 1 <= n <= sizes["max_images"]:
        fail(f"--n must be between 1 and {sizes['max_images']} for this bundle, got {n}")
    f = manifest["latent"]["vae_scale_factor"]
    return StaticShapes(height // f, width // f, n)


class OneLineUsageErrors(TyperGroup):
    """Command-line usage errors (bad option value, missing option, unknown command) as one line too; --help
    as click's plain text, like every command's (PlainHelp)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rich_markup_mode = None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except NoArgsIsHelpError:
            raise  # no arguments at all: show the help
        except UsageError as exc:
            fail(f"{exc.format_message()} (see `{ctx.command_path} --help`)")

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None and exc.ctx is not ctx else \
                " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            fail(f"{exc.format_message()} (see `{path} --help`)")


class PlainHelp(TyperCommand):
    """A command whose --help is click's plain text: flags without a ``<bool>`` type, and help texts
    shown as written (rich markup would swallow "[default: the bundle's]")."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rich_markup_mode = None


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=OneLineUsageErrors,
                  help="Style-personalised text-to-image: export to ONNX, run with a NumPy-only runtime.")


def user_errors(command):
    """Turn a UserError raised anywhere below a command into one line on stderr and exit code 2."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            fail(str(exc))
    return wrapper


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def quiet_progress_bars() -> None:
    """Silence transformers'/diffusers' tqdm bars on stderr (they would bury a one-line error)."""
    for name in ("transformers.utils.logging", "diffusers.utils.logging"):
        try:
            __import__(name, fromlist=["disable_progress_bar"]).disable_progress_bar()
        except ImportError:
            pass


def check_output_location(out: Path) -> None:
    """Fail before any work if ``out`` cannot be written: its nearest existing ancestor must be a writable dir."""
    existing = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        fail(f"cannot write --out {out}: {existing} is a file, not a directory: choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"cannot write --out {out}: no write permission in {existing}: choose another --out")


def _demo_bundle_path() -> Path:
    return Path(__file__).parent / "demo" / "bundle"


def _bundle_or_demo(bundle: Optional[Path]) -> Path:
    if bundle is not None:
        return bundle
    demo = _demo_bundle_path()
    if not (demo / "manifest.json").is_file():
        fail("no --bundle given and this install ships no demo bundle: pass --bundle DIR "
             "(make one with `stylegen-trt export --tiny --out DIR`)")
    return demo


@app.command(cls=PlainHelp)
@user_errors
def export(
    out: Path = typer.Option(..., "--out", help="Bundle directory to write (replaced if it is a bundle)."),
    base: Optional[Path] = typer.Option(None, "--base", help="Local SD 1.x directory in diffusers layout."),
    vgg: Optional[Path] = typer.Option(None, "--vgg", help="torchvision's vgg19-dcbbb69f.pth (default: torch hub cache)."),
    branch: Optional[Path] = typer.Option(None, "--branch", help="Style-branch weights (.safetensors) from `train`."),
    tiny: bool = typer.Option(False, "--tiny", help="Export the seeded random-weight tiny model (tests, CI)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the tiny model and of the untrained branch's stem."),
    style_image_size: Optional[int] = typer.Option(None, "--style-image-size", help="Style images are resized to this (default 512; tiny 64)."),
    external_data_mb: int = typer.Option(2047, "--external-data-mb", help="Graphs with more weights than this keep them in <graph>.onnx.data."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Export the style-guided model to a bundle of ONNX graphs with a manifest."""
    setup_logging(verbose)
    if tiny == (base is not None):
        fail("give exactly one of --base SD_DIR or --tiny")
    if external_data_mb < 0:
        fail("--external-data-mb must be >= 0")
    if style_image_size is not None and not 32 <= style_image_size <= 2048:
        fail("--style-image-size must be between 32 and 2048")
    for label, path in (("--vgg", vgg), ("--branch", branch)):
        if path is not None and not path.is_file():
            fail(f"{label} {path} not found: check the path")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a directory: choose another --out")
    if not verbose:
        quiet_progress_bars()
    import tempfile


    from stylegen_trt.export.bundle import export_bundle
    from stylegen_trt.export.graphs import ExportLimits
    from stylegen_trt.models import loaders

    vgg_given = vgg
    with tempfile.TemporaryDirectory(prefix="stylegen-tiny-") as tmp:
        if tiny:
            base = loaders.make_tiny_sd(Path(tmp) / "sd", seed)
            vgg = vgg or loaders.make_tiny_vgg(Path(tmp) / "vgg19.pth", seed)
        base_model = loaders.load_base(base)
        encoder = loaders.load_style_encoder(vgg)
        style_branch = loaders.load_branch(base_model, branch, seed)
        size = style_image_size or (64 if tiny else 512)
        limits = ExportLimits.for_base(base_model, size)
        description = {"kind": "tiny" if tiny else "custom", "base": "tiny random weights" if tiny else str(base),
                       "vgg": "seeded random VGG19" if tiny and vgg_given is None else str(vgg),
                       "branch": str(branch) if branch else "zero-initialised (plain SD)"}
        with progress_display() as progress:
            task = progress.add_task("exporting", total=5)

            def on_graph(name: str) -> None:
                progress.update(task, description=f"exporting {name}", advance=0)

            def done(name: str) -> None:
                on_graph(name)
                progress.advance(task)

            export_bundle(base_model, encoder, style_branch, out, limits,
                          external_data_threshold=external_data_mb * 2**20, description=description,
                          on_graph=done)
    typer.echo(f"wrote bundle {out}")


def progress_display(*columns: Any, transient: bool = True):
    """A rich progress display on stderr, drawn only when stderr is a terminal: stdout carries only
    the command's result lines (no blank line where a transient bar was), and logs or pipes get no
    bar at all."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(*columns, console=console, transient=transient, disable=not console.is_terminal)


@app.command(cls=PlainHelp)
@user_errors
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="What to draw. The demo model knows 13 words (e.g. \"a large "
                               "circle on the left\"); others are named in a warning."),
    out: Path = typer.Option(..., "--out", "-o", help="PNG path; with --n > 1, numbered: out-0.png, out-1.png, ..."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle directory [default: the shipped demo model]",
                                          show_default=False),
    negative: str = typer.Option("", "--negative", help="Negative prompt: what guidance steers away from "
                                 "[default: none]", show_default=False),
    style: List[Path] = typer.Option([], "--style", metavar="IMAGE", help="Style image; repeat to blend several [default: none: the "
                                     "base model alone]", show_default=False),
    style_weight: List[float] = typer.Option([], "--style-weight", metavar="WEIGHT", help="One per --style [default: equal, summing "
                                             "to 1]", show_default=False),
    style_scale: Optional[float] = typer.Option(None, "--style-scale", help="Multiplies the style branch's residuals "
                                                "(0: no style; below 0 subtracts them) [default: the bundle's]"),
    style_window: tuple[float, float] = typer.Option((0.0, 1.0), "--style-window", metavar="START END",
                                                     help="The style branch runs on steps i with START <= i/steps < "
                                                     "END (fractions of the schedule)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="ddpm (the patent's strided DDPM) | ddim | dpmpp "
                                            "[default: the bundle's]"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps [default: the bundle's]"),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale (1: off) "
                                             "[default: the bundle's]"),
    seed: int = typer.Option(0, "--seed", help="Seed of x_T (of all --n images) and of DDPM's per-step noise: "
                             "the same command gives the same image; change it for another"),
    n: int = typer.Option(1, "--n", help="Images of this prompt, generated in one batch"),
    height: Optional[int] = typer.Option(None, "--height", help="Image height in pixels [default: the size of "
                                         "--latents, else the bundle's native size]"),
    width: Optional[int] = typer.Option(None, "--width", help="Image width in pixels [default: the size of --latents, "
                                        "else the bundle's native size]"),
    latents: Optional[Path] = typer.Option(None, "--latents", help=".npy holding x_T, shape (n, C, H/f, W/f): C the "
                                           "bundle's latent channels and f its VAE factor (`stylegen-trt info` "
                                           "prints them; SD 1.x: 4 and 8, the demo: 4 and 2). Replaces the seed's x_T; DDPM's "
                                           "per-step noise still comes from --seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads per operator [default: the backend's "
                                          "choice: every usable core]"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    memory: str = typer.Option("fast", "--memory", help="fast | lean: lean frees working memory after each call "
                               "(lower peak memory, slower)"),
    backend: str = typer.Option("ort", "--backend", help="ort (ONNX Runtime) | trt (TensorRT engines, CUDA GPU) | openvino (CPU, bf16 where the CPU has it)"),
    precision: str = typer.Option("auto", "--precision", help="auto (trt: fp16, ort: fp32, openvino: bf16 where the CPU has AVX512-BF16/AMX, else fp32) | fp32 | fp16 (trt only) | bf16 (openvino only)"),
    static: bool = typer.Option(False, "--static", help="trt/openvino: engines built for exactly this --height/--width/--n "
                                "(`build --static`), guidance > 1"),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="trt: replay the UNet step as a CUDA graph (implies --static)"),
    upscale: int = typer.Option(1, "--upscale", min=1, max=32, help="Write the PNG at this many times the generated "
                                "size, each pixel an NxN block (nearest neighbour: the demo's 32x32 images are easier to "
                                "see at --upscale 8)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what is done (INFO) on stderr"),
):
    """Generate images from a prompt in the style of the given images."""
    setup_logging(verbose)
    from stylegen_trt.runtime.bundle import open_bundle
    from stylegen_trt.runtime.images import read_image_file, save_png
    from stylegen_trt.runtime.pipeline import StylePipeline, check_request
    from stylegen_trt.runtime.requests import build_request, load_latents

    options = engine_options(backend, precision, device, threads, memory, cuda_graph=cuda_graph)
    if out.suffix.lower() != ".png":
        fail(f"--out {out} must end in .png")
    if out.exists() and out.is_dir():
        fail(f"--out {out} is a directory: give a file path ending in .png")
    check_output_location(out)
    b = open_bundle(_bundle_or_demo(bundle))
    request = build_request(
        b.manifest, prompt, negative=negative, styles=tuple(style), style_weights=style_weight or None,
        style_scale=style_scale, style_window=style_window, scheduler=scheduler, steps=steps, guidance=guidance,
        seed=seed, n=n, height=height, width=width,
        latents=load_latents(latents, b.manifest) if latents is not None else None)
    check_request(request, b.manifest)  # before opening engines: bad input fails fast
    for path in style:
        read_image_file(path)
    if static or cuda_graph:
        import dataclasses

        from stylegen_trt.runtime.pipeline import resolve_size

        h, w = resolve_size(request, b.manifest)
        options = dataclasses.replace(options, static=static_shapes(b.manifest, h, w, len(request.prompts)))
        engine_options(options.backend, static=options.static)  # --static is TensorRT's
    with StylePipeline(b, options) as pipe:
        with progress_display() as progress:
            task = progress.add_task("denoising", total=request.steps)
            result = pipe.generate(request, on_step=lambda i, total: progress.update(task, completed=i, total=total))
    paths = [out] if n == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(n)]
    written: list[Path] = []
    try:
        for image, path in zip(result.images, paths):
            save_png(image.repeat(upscale, axis=0).repeat(upscale, axis=1), path)
            written.append(path)
    except OSError as exc:
        for done in written:  # all images or none
            done.unlink(missing_ok=True)
        fail(f"cannot write {path}: {exc.strerror or exc}: choose another --out")
    if latents is None:
        origin = f"seed {result.seed}"
    elif request.scheduler == "ddpm":
        origin = f"x_T from {latents}, seed {result.seed} for DDPM's per-step noise"
    else:
        origin = f"x_T from {latents}; {request.scheduler} draws no noise, so no seed was used"
    h, w = result.images.shape[1:3]
    size = f"{w}x{h} px" + (f", written at {w * upscale}x{h * upscale} (--upscale {upscale})" if upscale > 1 else "")
    typer.echo(f"wrote {', '.join(map(str, paths))} ({size}; {origin})")


@app.command(cls=PlainHelp)
@user_errors
def build(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle directory (default: the shipped demo model)."),
    backend: str = typer.Option("ort", "--backend", help="ort: ONNX Runtime's optimised graphs | trt: TensorRT engines | openvino: compiled OpenVINO models (CPU)"),
    precision: str = typer.Option("auto", "--precision", help="auto (trt: fp16, ort: fp32, openvino: bf16 where the CPU has AVX512-BF16/AMX, else fp32) | fp32 | fp16 (trt only) | bf16 (openvino only)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    graph: List[str] = typer.Option([], "--graph", help="Only these graphs (repeatable; default: all five)."),
    static: bool = typer.Option(False, "--static", help="trt: engines for exactly one size: profile min = opt = max; openvino: compiled for this size (the default for openvino)"),
    height: Optional[int] = typer.Option(None, "--height", help="With --static [default: the bundle's native size]"),
    width: Optional[int] = typer.Option(None, "--width", help="With --static [default: the bundle's native size]"),
    n: int = typer.Option(1, "--n", help="With --static: images per generation (UNet batch 2n: guidance > 1)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Build (or check) the engines of a bundle ahead of time, into <bundle>/engines/<backend>/<key>/
    (a read-only or the shipped demo bundle: under the user cache, $STYLEGEN_TRT_CACHE or ~/.cache/stylegen-trt).

    Safe to re-run: an entry whose key and file hashes match is reused, a stale one is rebuilt.
    Prints one line per graph.
    """
    setup_logging(verbose)
    from stylegen_trt.runtime.bundle import GRAPH_NAMES, open_bundle

    options = engine_options(backend, precision, device)
    unknown = sorted(set(graph) - set(GRAPH_NAMES))
    if unknown:
        fail(f"unknown --graph {', '.join(unknown)}: choose from {', '.join(GRAPH_NAMES)}")
    if backend == "openvino":
        static = True  # OpenVINO compiles for concrete shapes: the bundle's native size, 1 image by default
    if not static and (height is not None or width is not None or n != 1):
        fail("--height, --width and --n go with --static")
    b = open_bundle(_bundle_or_demo(bundle))
    if static:
        options = engine_options(backend, precision, device, static=static_shapes(b.manifest, height, width, n))
    for name in graph or GRAPH_NAMES:
        built = b.build_engine(name, options)
        action = "reused" if built.reused else f"built in {built.seconds:.1f} s"
        shown = built.entry.relative_to(b.path) if built.entry.is_relative_to(b.path) else built.entry
        typer.echo(f"{name}: {action} -> {shown}")


@app.command(cls=PlainHelp)
@user_errors
def verify(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle directory (default: the shipped demo model)."),
    backend: str = typer.Option("trt", "--backend", help="The candidate: trt | ort | openvino"),
    precision: str = typer.Option("auto", "--precision", help="auto (trt: fp16, ort: fp32, openvino: bf16 where the CPU has AVX512-BF16/AMX, else fp32) | fp32 | fp16 | bf16"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    prompt: str = typer.Option("a large circle on the left", "--prompt", "-p"),
    style: Optional[Path] = typer.Option(None, "--style", help="Style image (default: a procedural swatch)."),
    steps: int = typer.Option(10, "--steps", help="Steps of the end-to-end comparison."),
    seed: int = typer.Option(0, "--seed"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every figure here as JSON."),
    static: bool = typer.Option(False, "--static", help="trt/openvino: the static engines of the bundle's native size, 1 image"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Compare a backend's engines with the fp32 ONNX reference (ONNX Runtime, CPU, no graph rewrites).

    Every graph gets the inputs a real generation gives it; each output's max error relative to the
    reference's largest value must be within 1e-3 (fp32) or 2e-2 (fp16). Exit code 1 if not.
    """
    setup_logging(verbose)
    import tempfile

    from stylegen_trt.files import atomic_write_bytes
    from stylegen_trt.runtime.bundle import open_bundle
    from stylegen_trt.runtime.images import procedural_swatch, read_image_file, save_png
    from stylegen_trt.runtime.pipeline import check_request
    from stylegen_trt.runtime.requests import build_request
    from stylegen_trt.runtime.verify import verify as run_verify

    options = engine_options(backend, precision, device)
    if json_out is not None:
        check_output_location(json_out)
    b = open_bundle(_bundle_or_demo(bundle))
    if static:
        options = engine_options(backend, precision, device, static=static_shapes(b.manifest, None, None, 1))
    with tempfile.TemporaryDirectory() as tmp:
        if style is None:
            style = Path(tmp) / "swatch.png"
            save_png(procedural_swatch(), style)
        read_image_file(style)
        request = build_request(b.manifest, prompt, styles=(style,), steps=steps, seed=seed)
        check_request(request, b.manifest)
        report = run_verify(b, options, request)
    for graph, check in report.worst().items():
        verdict = "ok" if all(o.passed for o in report.outputs if o.graph == graph) else "FAIL"
        typer.echo(f"{graph:13s} worst output {check.output:10s} max abs {check.max_abs:.2e}  "
                   f"rel {check.max_rel:.2e}  (tolerance {report.tolerance:.0e})  {verdict}")
    typer.echo(f"end to end ({steps} steps): max pixel diff {report.image_max_abs}, mean {report.image_mean_abs:.3f}, "
               f"PSNR {report.image_psnr:.1f} dB")
    if json_out is not None:
        atomic_write_bytes(json_out, (json.dumps(report.to_json(), indent=2) + "\n").encode())
    if not report.passed:
        typer.echo("verification FAILED: outputs outside the tolerance", err=True)
        raise typer.Exit(1)


@app.command(cls=PlainHelp)
@user_errors
def info(bundle: Optional[Path] = typer.Argument(None, help="Bundle directory (default: the shipped demo model).")):
    """What is in a bundle: graphs, inputs with their ranges, sizes, hashes."""
    from stylegen_trt.runtime.bundle import describe_bundle, open_bundle

    typer.echo(describe_bundle(open_bundle(_bundle_or_demo(bundle))))


@app.command(cls=PlainHelp)
@user_errors
def train(
    base: Path = typer.Option(..., "--base", help="Local SD 1.x directory in diffusers layout (frozen)."),
    data: Path = typer.Option(..., "--data", help="Folder of images with metadata.jsonl or a .txt caption beside each."),
    out: Path = typer.Option(..., "--out", help="Branch weights to write (.safetensors); checkpoint and loss log go beside it."),
    vgg: Optional[Path] = typer.Option(None, "--vgg", help="torchvision's vgg19-dcbbb69f.pth (default: torch hub cache)."),
    steps: int = typer.Option(1000, "--steps", help="Optimiser updates in all (a resumed run goes on to this)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per micro-batch."),
    grad_accumulation: int = typer.Option(1, "--grad-accumulation", help="Micro-batches per update."),
    learning_rate: float = typer.Option(1e-4, "--lr", help="AdamW learning rate."),
    caption_dropout: float = typer.Option(0.1, "--caption-dropout", help="Probability that a caption is replaced "
                                          "by \"\" (so classifier-free guidance works)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Training image size [default: the base model's native size]"),
    style_image_size: int = typer.Option(512, "--style-image-size", help="Images are resized to this for their style "
                                         "map (use the size the bundle will be exported with)."),
    mixed_precision: str = typer.Option("no", "--mixed-precision", help="no | fp16 | bf16 (CUDA)"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", help="Steps between checkpoints (OUT.ckpt)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the checkpoint beside --out, exactly "
                                "where it stopped (same weights as a run never stopped)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N"),
    seed: int = typer.Option(0, "--seed", help="Seed of the branch's stem, the noise and the data order."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what is done (INFO) on stderr."),
):
    """Train the style branch on a folder of captioned images (base frozen, self-style, as in the patent)."""
    import re

    setup_logging(verbose)
    for label, value in (("--steps", steps), ("--batch-size", batch_size), ("--grad-accumulation", grad_accumulation),
                         ("--checkpoint-every", checkpoint_every)):
        if value < 1:
            fail(f"{label} must be >= 1, got {value}")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        fail(f"unknown --device {device!r}: choose cpu, cuda or cuda:N")
    if resolution is not None and resolution < 8:
        fail(f"--resolution must be >= 8, got {resolution}")
    if style_image_size < 32:
        fail(f"--style-image-size must be >= 32, got {style_image_size}")
    if mixed_precision not in ("no", "fp16", "bf16"):
        fail(f"unknown --mixed-precision {mixed_precision!r}: choose no, fp16 or bf16")
    if mixed_precision != "no" and not device.startswith("cuda"):
        fail("--mixed-precision needs --device cuda")
    if out.suffix != ".safetensors":
        fail(f"--out {out} must end in .safetensors")
    if not 0.0 <= caption_dropout < 1.0:
        fail("--caption-dropout must be in [0, 1)")
    check_output_location(out)
    if not verbose:
        quiet_progress_bars()
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    from stylegen_trt.models import loaders
    from stylegen_trt.training.branch import BranchTrainer, TrainConfig, train_branch
    from stylegen_trt.training.data import folder_batches, scan_folder

    items = scan_folder(data)
    base_model = loaders.load_base(base)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail("--device cuda asked for, but torch sees no CUDA device: use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            fail(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    encoder = loaders.load_style_encoder(vgg)
    branch = loaders.new_branch(base_model, seed)
    config = TrainConfig(steps=steps, batch_size=batch_size, grad_accumulation=grad_accumulation,
                         learning_rate=learning_rate, caption_dropout=caption_dropout,
                         style_image_size=style_image_size, mixed_precision=mixed_precision,
                         checkpoint_every=checkpoint_every, seed=seed, device=device)
    for module in (base_model.unet, base_model.vae, base_model.text_encoder, encoder, branch):
        module.to(device)
    trainer = BranchTrainer(base_model, encoder, branch, config)
    batches = folder_batches(items, resolution or base_model.native_size, batch_size, seed)
    typer.echo(f"training on {len(items)} captioned images from {data}")
    with progress_display(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), transient=False) as progress:
        task = progress.add_task("training", total=steps, loss=float("nan"))
        train_branch(trainer, batches, out, lambda step, loss: progress.update(task, completed=step, loss=loss),
                     resume=resume)
    typer.echo(f"wrote {out} (loss log {out.with_suffix('.loss.jsonl')})")


def _stysim_for(b, vgg: Optional[Path]):
    from stylegen_trt.metrics.stysim import StySim

    if vgg is not None:
        import torch
        state = torch.load(vgg, map_location="cpu", weights_only=True)
    elif b.is_demo or b.manifest.get("description", {}).get("kind") == "tiny":
        from stylegen_trt.models.style_encoder import random_vgg19_state
        state = random_vgg19_state(b.manifest["description"].get("training", {}).get("config", {}).get("seed", 0))
    else:
        fail("StySim needs VGG19 weights: pass --vgg vgg19-dcbbb69f.pth")
    return StySim(state, b.manifest["style"]["image_size"])


@app.command(name="eval", cls=PlainHelp)
@user_errors
def evaluate_command(
    style: List[Path] = typer.Option([], "--style", help="Style image; repeat. Default for the demo: held-out swatches."),
    prompt: List[str] = typer.Option([], "--prompt", help="Prompt; repeat. Default for the demo: every content."),
    bundle: Optional[Path] = typer.Option(None, "--bundle"),
    vgg: Optional[Path] = typer.Option(None, "--vgg", help="VGG19 weights for StySim (the demo uses its own)."),
    inception: Optional[Path] = typer.Option(None, "--inception", help="TorchScript Inception for FID/KID "
                                             "(e.g. inception-2015-12-05.pt)."),
    clip: Optional[Path] = typer.Option(None, "--clip", help="Local CLIP directory (transformers layout) for CLIPSIM."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Default: the bundle's."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Default: the bundle's."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Default: the bundle's."),
    images_per_pair: int = typer.Option(1, "--images-per-pair"),
    prompts_per_call: int = typer.Option(0, "--prompts-per-call", help="Prompts generated in one batch "
                                         "(0: as many as the bundle allows; 1: one prompt per generation)."),
    seed: int = typer.Option(0, "--seed"),
    seeds: int = typer.Option(1, "--seeds", help="Generate every pair with seeds SEED..SEED+N-1 and pool them."),
    style_scale: Optional[float] = typer.Option(None, "--style-scale", help="[default: the bundle's]"),
    style_window: tuple[float, float] = typer.Option((0.0, 1.0), "--style-window", metavar="START END",
                                                     help="As generate's: the branch runs on steps i with START <= "
                                                     "i/steps < END"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full report (every pair) here."),
    backend: str = typer.Option("ort", "--backend", help="The runtime's backend: ort | trt | openvino (e.g. to check "
                                "that a lower precision keeps StySim and content accuracy)"),
    precision: str = typer.Option("auto", "--precision", help="auto (trt: fp16, ort: fp32, openvino: bf16 where the "
                                  "CPU has AVX512-BF16/AMX, else fp32) | fp32 | fp16 | bf16"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """StySim (the patent's metric), spectrum similarity and colour distance to the style image, with vs without
    style guidance; for the demo also the texture family (a palette-blind judge) and content accuracy."""
    setup_logging(verbose)
    import tempfile


    from stylegen_trt.metrics.evaluate import EvalSettings, add_fidelity, evaluate, write_report
    from stylegen_trt.runtime.bundle import open_bundle
    from stylegen_trt.runtime.images import save_png
    from stylegen_trt.runtime.pipeline import StylePipeline, check_style_window
    from stylegen_trt.runtime.requests import BundleDefaults

    options = engine_options(backend, precision, threads=threads)
    check_style_window(style_window)
    if json_out is not None:
        check_output_location(json_out)
    b = open_bundle(_bundle_or_demo(bundle))
    with tempfile.TemporaryDirectory(prefix="stylegen-eval-") as tmp:
        styles = list(style)
        prompts = list(prompt)
        if b.is_demo:
            from stylegen_trt.demo import data, texture_judge

            if not styles:  # every texture family in each held-out palette, drawn by the judge's own code
                for name, swatch in texture_judge.eval_swatches():
                    save_png(swatch, Path(tmp) / f"{name}.png")
                    styles.append(Path(tmp) / f"{name}.png")
            prompts = prompts or [c.prompt for c in data.all_contents()]
        if not styles or not prompts:
            fail("give at least one --style and one --prompt")
        weights = (("FID/KID", "--inception", inception, "file"), ("CLIPSIM", "--clip", clip, "dir"))
        for label, option, path, kind in weights:  # bad weights fail before any image is generated
            if path is not None and not (path.is_file() if kind == "file" else path.is_dir()):
                fail(f"{option} {path}: no such {'file' if kind == 'file' else 'directory'}")
        if inception is not None:
            from stylegen_trt.metrics.fidelity import InceptionFeatures
            InceptionFeatures(inception)
        for label, option, path, _ in weights:
            if path is None:
                typer.echo(f"{label}: skipped (needs local weights: pass {option} PATH; nothing is downloaded)", err=True)
        defaults = BundleDefaults.of(b.manifest)
        for label, value in (("--seeds", seeds), ("--images-per-pair", images_per_pair)):
            if value < 1:
                fail(f"{label} must be >= 1, got {value}")
        if prompts_per_call < 0:
            fail(f"--prompts-per-call must be >= 0 (0: as many as the bundle allows), got {prompts_per_call}")
        settings = EvalSettings(scheduler=defaults.scheduler if scheduler is None else scheduler,
                                steps=defaults.steps if steps is None else steps,
                                guidance=defaults.guidance if guidance is None else guidance,
                                style_scale=defaults.style_scale if style_scale is None else style_scale,
                                style_window=tuple(style_window), seed=seed, seeds=seeds, images_per_pair=images_per_pair,
                                prompts_per_call=prompts_per_call)
        stysim = _stysim_for(b, vgg)
        from stylegen_trt.metrics.texture import style_measures

        judge, extra_judges, family_of, family_names = None, {}, None, ()
        if b.is_demo:
            from stylegen_trt.demo import classifier, texture_judge
            judge = classifier.content_judge()
            extra_judges = {"any_outline": classifier.content_judge(classifier.load(classifier.ANY_OUTLINE_WEIGHTS))}
            family_model = texture_judge.load()
            family_of = lambda images: texture_judge.classify(family_model, images)  # noqa: E731
            family_names = texture_judge.FAMILIES
        with StylePipeline(b, options) as pipe, progress_display() as progress:
            task = progress.add_task("evaluating", total=len(styles) * len(prompts) * settings.seeds)
            report = evaluate(pipe, prompts, styles, stysim, settings, judge,
                              on_pair=lambda i, total: progress.update(task, completed=i),
                              measures=style_measures(family_of, family_names), extra_judges=extra_judges)
        if inception is not None or clip is not None:
            add_fidelity(report, inception, clip)
    typer.echo(report.table())
    if json_out is not None:
        write_report(report, json_out)
        typer.echo(f"wrote {json_out}")


@app.command(cls=PlainHelp)
@user_errors
def grid(
    out: Path = typer.Option(..., "--out", help="PNG of the grid: columns = prompts, rows = no style + each style."),
    prompt: List[str] = typer.Option([], "--prompt", help="Prompt; repeat [default for the demo: four shapes]",
                                     show_default=False),
    style: List[Path] = typer.Option([], "--style", metavar="IMAGE", help="Style image; repeat [default: the six example styles, "
                                     "examples/styles/*.png, rendered by the package]", show_default=False),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle directory [default: the shipped demo model]"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="ddpm | ddim | dpmpp [default: the bundle's]"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps [default: the bundle's]"),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale "
                                             "[default: the bundle's]"),
    style_scale: Optional[float] = typer.Option(None, "--style-scale", help="Multiplies the style branch's residuals "
                                                "[default: the bundle's]"),
    seed: int = typer.Option(0, "--seed", help="Seed of the first column; column i uses SEED + i"),
    cell: int = typer.Option(96, "--cell", help="Pixel size of each cell (images are upscaled, nearest)."),
):
    """A prompts x styles grid (plus the no-style row), each row headed by its style image."""
    import tempfile

    from stylegen_trt.runtime.bundle import open_bundle
    from stylegen_trt.runtime.images import save_png
    from stylegen_trt.runtime.pipeline import StylePipeline
    from stylegen_trt.runtime.requests import style_grid

    check_output_location(out)
    b = open_bundle(_bundle_or_demo(bundle))
    prompts = list(prompt) or (["a large circle in the center", "a small square on the left",
                                "a large triangle on the right", "a large cross in the center"] if b.is_demo else [])
    if not prompts:
        fail("give at least one --prompt")
    with tempfile.TemporaryDirectory(prefix="stylegen-grid-") as tmp:
        styles = list(style)
        if not styles:  # examples/styles is not in the wheel: the package renders the same images (numpy only)
            from stylegen_trt.demo.data import example_styles

            for name, swatch in sorted(example_styles(), key=lambda named: named[0]):  # the files' order
                save_png(swatch, Path(tmp) / f"{name}.png")
                styles.append(Path(tmp) / f"{name}.png")
        with StylePipeline(b) as pipe:
            image = style_grid(pipe, prompts, styles, cell=cell, seed=seed, scheduler=scheduler, steps=steps,
                               guidance=guidance, style_scale=style_scale)
    save_png(image, out)
    typer.echo(f"wrote {out}: {1 + len(styles)} rows (no style + {len(styles)} styles) x {len(prompts)} prompts")


@app.command(cls=PlainHelp)
@user_errors
def bench(
    ctx: typer.Context,
    config: Optional[str] = typer.Option(None, "--config", help="tiny | small (default) | sd15: random-weight models, "
                                         "built and exported once, cached under ~/.cache/stylegen-trt/bench."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Your own bundle (instead of --config); needs --base."),
    base: Optional[Path] = typer.Option(None, "--base", help="With --bundle: the SD 1.x directory it was exported from."),
    vgg: Optional[Path] = typer.Option(None, "--vgg", help="With --bundle: the VGG19 checkpoint (default: torch hub cache)."),
    branch: Optional[Path] = typer.Option(None, "--branch", help="With --bundle: the branch weights it was exported with."),
    prompt: str = typer.Option("a red cat painting", "--prompt", "-p"),
    negative: str = typer.Option("", "--negative"),
    style: Optional[Path] = typer.Option(None, "--style", help="Style image (default: a procedural swatch)."),
    scheduler: str = typer.Option("ddpm", "--scheduler"),
    steps: int = typer.Option(50, "--steps"),
    guidance: float = typer.Option(7.5, "--guidance"),
    seed: int = typer.Option(0, "--seed"),
    size: Optional[int] = typer.Option(None, "--size", help="Square image side in pixels (default: the bundle's native size)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads for both sides (default: every usable core)."),
    memory: str = typer.Option("fast", "--memory", help="The runtime's memory setting: fast | lean."),
    repeats: int = typer.Option(3, "--repeats", help="Timed rounds (after --warmup rounds)."),
    warmup: int = typer.Option(1, "--warmup"),
    overhead_steps: int = typer.Option(10, "--overhead-steps", help="Steps of the style-overhead runs."),
    quality: str = typer.Option("ddpm:50,dpmpp:10,dpmpp:20", "--quality", help="SAMPLER:STEPS,... for steps-for-quality."),
    skip: List[str] = typer.Option([], "--skip", help="Leave out a section: cold_start, style_overhead, steps_for_quality, "
                                   "optimum."),
    optimum_python: Optional[Path] = typer.Option(None, "--optimum-python", help="The python of an environment with "
                                                  "optimum-intel, for the third side (default: this one, when it has "
                                                  "optimum-intel; else that section is not run)."),
    cold_repeats: int = typer.Option(1, "--cold-repeats", help="Fresh processes per side for cold start and peak RSS."),
    tolerance: int = typer.Option(2, "--tolerance", help="Outputs agree if max |runtime - torch| over uint8 pixels <= this."),
    gemm_size: int = typer.Option(2048, "--gemm-size", help="Matrix side of the fp32 GEMM-rate measurement."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where --config models are cached."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every figure here as JSON."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Write a RESULTS.md-style report here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Stage-breakdown PNG (default with --markdown: beside it)."),
    backend: str = typer.Option("ort", "--backend", help="The runtime's backend: ort | trt | openvino. On a GPU (trt, or ort "
                                "--device cuda) the PyTorch reference runs on CUDA in fp16."),
    device: str = typer.Option("auto", "--device", help="The runtime's device: auto | cpu | cuda"),
    precision: str = typer.Option("auto", "--precision", help="auto (trt: fp16, ort: fp32, openvino: bf16 where the CPU has AVX512-BF16/AMX, else fp32) | fp32 | fp16 | bf16"),
    static: bool = typer.Option(False, "--static", help="trt/openvino: static engines at --size, 1 image (openvino: compiled at open)"),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="trt: the UNet step as a CUDA graph (implies --static)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Time the runtime against the PyTorch eager reference on the same work; check they agree.

    Exit code 1 if the two sides' images disagree (results are still written).
    """
    import shlex

    setup_logging(verbose)
    logging.getLogger("stylegen_trt.bench").setLevel(logging.INFO)  # progress of a long run, on stderr
    if not verbose:
        quiet_progress_bars()
    from stylegen_trt.bench import configs, report
    from stylegen_trt.bench.harness import BenchSettings, run_bench
    from stylegen_trt.files import atomic_write_bytes

    if bundle is not None and config is not None:
        fail("give either --config or --bundle, not both")
    if bundle is not None and base is None:
        fail("--bundle needs --base: the SD 1.x directory the bundle was exported from (the PyTorch side runs it)")
    if bundle is None and any(x is not None for x in (base, vgg, branch)):
        fail("--base, --vgg and --branch go with --bundle")
    if threads is not None and threads < 1:
        fail("--threads must be >= 1")
    check_memory(memory)
    engine_options(backend, precision, device, threads, memory, cuda_graph=cuda_graph)
    if static and backend not in ("trt", "openvino"):
        fail("--static and --cuda-graph are TensorRT options: add --backend trt")
    if backend == "openvino":  # before building any model: the openvino package must be there
        from stylegen_trt.engines.openvino import require_openvino

        require_openvino()
    if backend == "trt":  # before building any model: TensorRT and a GPU must be there
        from stylegen_trt.engines.trt import cuda_device, require_tensorrt

        require_tensorrt()
        cuda_device(0)
    elif device == "cuda":
        from stylegen_trt.engines.ort import choose_providers

        choose_providers("cuda")
    if style is not None and not style.is_file():
        fail(f"--style {style} not found: check the path")
    if optimum_python is not None:  # before building any model
        from stylegen_trt.bench.optimum_side import find_python

        find_python(optimum_python)
    try:
        quality_runs = tuple((name.strip(), int(k)) for name, k in (item.split(":") for item in quality.split(",") if item))
    except ValueError:
        fail(f"--quality {quality!r} must look like ddpm:50,dpmpp:10")
    settings = BenchSettings(
        prompt=prompt, negative=negative, style=style, scheduler=scheduler, steps=steps, guidance=guidance, seed=seed,
        size=size, threads=threads, memory=memory, repeats=repeats, warmup=warmup, overhead_steps=overhead_steps,
        quality=quality_runs, cold_repeats=cold_repeats, skip=frozenset(x.replace("-", "_") for x in skip),
        tolerance=tolerance, gemm_size=gemm_size, backend=backend, device=device, precision=precision,
        static=static or cuda_graph, cuda_graph=cuda_graph, optimum_python=optimum_python)
    for out in (json_out, markdown_out, plot):
        if out is not None:
            check_output_location(out)
    parts = ["stylegen-trt", "bench"]  # the command as given, for the report
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            parts += [param.opts[0]] if value else []
        else:
            parts += [x for v in (value if isinstance(value, (list, tuple)) else [value]) for x in (param.opts[0], str(v))]
    command = shlex.join(parts)

    model = configs.custom(bundle, base, vgg, branch) if bundle is not None else \
        configs.prepare(config or "small", cache_dir)
    results = run_bench(model, settings, command)
    if json_out is not None:
        atomic_write_bytes(json_out, (json.dumps(results, indent=2) + "\n").encode())
    if markdown_out is not None and plot is None:
        plot = markdown_out.with_name(markdown_out.stem + "-stages.png")
    if plot is not None:
        report.stage_plot(results, plot)
    if markdown_out is not None:
        name = os.path.relpath(plot, markdown_out.parent) if plot is not None else None
        atomic_write_bytes(markdown_out, report.markdown(results, name).encode())
    typer.echo(report.text_summary(results))
    if not results["end_to_end"]["agreement"]["agree"]:
        raise typer.Exit(1)


def _serve_settings(bundle: Optional[Path], backend: str, device: str, threads: Optional[int], precision: str,
                    max_batch: Optional[int], max_queue_delay_ms: float, instances: int, residual_cache_mb: int):
    """ServeSettings from command-line values; the bundle is checked now, so a bad one fails before Triton starts."""
    from stylegen_trt.runtime.bundle import open_bundle
    from stylegen_trt.serve.contract import ServeSettings

    engine_options(backend, precision, device, threads)
    b = open_bundle(_bundle_or_demo(bundle))
    if max_batch is None:  # what one UNet batch of the bundle holds (the pipeline splits larger batches)
        max_batch = min(b.manifest["sizes"]["max_images"], MAX_SERVE_BATCH)
    for label, value, low in (("--max-batch", max_batch, 1), ("--instances", instances, 1),
                              ("--residual-cache-mb", residual_cache_mb, 0)):
        if value < low:
            fail(f"{label} must be >= {low}, got {value}")
    if not 0 <= max_queue_delay_ms <= 60_000:
        fail(f"--max-queue-delay-ms must be between 0 and 60000, got {max_queue_delay_ms}")
    return ServeSettings(bundle=None if bundle is None else bundle.resolve(), backend=backend, device=device,
                         threads=threads, precision=precision, max_batch=max_batch,
                         max_queue_delay_ms=max_queue_delay_ms, instances=instances,
                         residual_cache_mb=residual_cache_mb)


MAX_SERVE_BATCH = 16  # a cap: every request of a batch waits for the whole batch
_SERVE_OPTIONS = dict(
    backend=typer.Option("ort", "--backend", help="ort (ONNX Runtime) | trt (TensorRT engines, CUDA GPU)"),
    device=typer.Option("auto", "--device", help="auto | cpu | cuda"),
    threads=typer.Option(None, "--threads", help="Intra-op threads per model instance [default: all cores]"),
    precision=typer.Option("auto", "--precision", help="auto (trt: fp16, ort: fp32) | fp32 | fp16 (trt only)"),
    max_batch=typer.Option(None, "--max-batch", help="Requests Triton hands one model call (they share UNet "
                           "batches) [default: the bundle's images per batch, at most 16]"),
    max_queue_delay_ms=typer.Option(50.0, "--max-queue-delay-ms", help="How long Triton may hold a request to "
                                    "fill a batch (demo, 16 clients: 50 ms kept batches whole, p95 6.7-8.2x a "
                                    "solo request over 3 runs; 5 ms: 8.3-10.7x over 2)."),
    instances=typer.Option(1, "--instances", help="Model instances (each loads the engines; one per GPU or "
                           "per few cores)."),
    residual_cache_mb=typer.Option(256, "--residual-cache-mb", help="Style residuals kept across requests "
                                   "per instance (LRU); 0 turns the cache off."),
)


@app.command(cls=PlainHelp)
@user_errors
def serve(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle directory (default: the shipped demo model)."),
    backend: str = _SERVE_OPTIONS["backend"],
    device: str = _SERVE_OPTIONS["device"],
    threads: Optional[int] = _SERVE_OPTIONS["threads"],
    precision: str = _SERVE_OPTIONS["precision"],
    max_batch: Optional[int] = _SERVE_OPTIONS["max_batch"],
    max_queue_delay_ms: float = _SERVE_OPTIONS["max_queue_delay_ms"],
    instances: int = _SERVE_OPTIONS["instances"],
    residual_cache_mb: int = _SERVE_OPTIONS["residual_cache_mb"],
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    http_port: int = typer.Option(8000, "--http-port"),
    grpc_port: int = typer.Option(8001, "--grpc-port"),
    metrics_port: int = typer.Option(8002, "--metrics-port"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Serve the `stylegen` model on Triton Inference Server (HTTP, gRPC, metrics) until SIGTERM or Ctrl-C.

    Runs the tritonserver that nvidia-pytriton ships (install stylegen-trt[serve]) on a model repository
    written for this run, the same one `stylegen-trt triton-repo` writes for NVIDIA's container.
    SIGTERM drains in-flight requests, then exits 0.
    """
    import tempfile

    setup_logging(verbose)
    logging.getLogger("stylegen_trt.serve").setLevel(logging.INFO)  # "ready" and the addresses, on stderr
    from stylegen_trt.serve.repo import write_model_repository
    from stylegen_trt.serve.server import serve_forever

    settings = _serve_settings(bundle, backend, device, threads, precision, max_batch, max_queue_delay_ms,
                               instances, residual_cache_mb)
    for label, port in (("--http-port", http_port), ("--grpc-port", grpc_port), ("--metrics-port", metrics_port)):
        if not 1 <= port <= 65535:
            fail(f"{label} must be between 1 and 65535, got {port}")
    with tempfile.TemporaryDirectory(prefix="stylegen-trt-repo-") as tmp:
        repo = write_model_repository(Path(tmp) / "repo", settings)
        code = serve_forever(repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, host=host)
    raise typer.Exit(code)


@app.command(name="triton-repo", cls=PlainHelp)
@user_errors
def triton_repo(
    out: Path = typer.Option(..., "--out", help="Model repository directory to write (for tritonserver "
                             "--model-repository)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle directory (default: the shipped demo model)."),
    copy_bundle: bool = typer.Option(False, "--copy-bundle", help="Copy the bundle into the repository (self-contained, "
                                     "for images and volumes) instead of referencing its absolute path."),
    backend: str = _SERVE_OPTIONS["backend"],
    device: str = _SERVE_OPTIONS["device"],
    threads: Optional[int] = _SERVE_OPTIONS["threads"],
    precision: str = _SERVE_OPTIONS["precision"],
    max_batch: Optional[int] = _SERVE_OPTIONS["max_batch"],
    max_queue_delay_ms: float = _SERVE_OPTIONS["max_queue_delay_ms"],
    instances: int = _SERVE_OPTIONS["instances"],
    residual_cache_mb: int = _SERVE_OPTIONS["residual_cache_mb"],
):
    """Write a Triton model repository for NVIDIA's tritonserver container (fleets: replicas, KServe)."""
    from stylegen_trt.serve.repo import write_model_repository

    settings = _serve_settings(bundle, backend, device, threads, precision, max_batch, max_queue_delay_ms,
                               instances, residual_cache_mb)
    repo = write_model_repository(out, settings, copy_bundle=copy_bundle)
    typer.echo(f"wrote model repository {repo} (model `stylegen`; run: tritonserver --model-repository {repo})")


@app.command(name="bench-serve", cls=PlainHelp)
@user_errors
def bench_serve(
    url: Optional[str] = typer.Option(None, "--url", help="A running server's HTTP address (host:port); default: "
                                      "start one on free loopback ports with the options below."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle directory (default: the shipped demo model)."),
    style: List[Path] = typer.Option([], "--style", help="Style image; repeat (default: 4 procedural swatches)."),
    clients: str = typer.Option("1,4,16", "--clients", help="Concurrency levels; the first must be 1."),
    requests: int = typer.Option(64, "--requests", help="Requests per level above 1 client."),
    steps: Optional[int] = typer.Option(None, "--steps", help="[default: the bundle's]"),
    backend: str = _SERVE_OPTIONS["backend"],
    threads: Optional[int] = _SERVE_OPTIONS["threads"],
    max_batch: Optional[int] = _SERVE_OPTIONS["max_batch"],
    max_queue_delay_ms: float = _SERVE_OPTIONS["max_queue_delay_ms"],
    instances: int = _SERVE_OPTIONS["instances"],
    residual_cache_mb: int = _SERVE_OPTIONS["residual_cache_mb"],
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every figure here as JSON."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Write a RESULTS.md section here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Throughput/latency PNG (default with --markdown: beside it)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Drive a `stylegen` server with 1, 4, 16 concurrent clients: images/s, p50/p95/p99 latency, and a check
    that every image equals the same request served alone. Exit code 1 if any request failed or was mixed up."""
    import contextlib
    import shlex
    import sys
    import tempfile

    setup_logging(verbose)
    logging.getLogger("stylegen_trt.serve").setLevel(logging.INFO)
    from stylegen_trt.files import atomic_write_bytes
    from stylegen_trt.runtime.images import png_bytes, read_style_file
    from stylegen_trt.serve import load

    try:
        levels = tuple(int(c) for c in clients.split(","))
    except ValueError:
        fail(f"--clients {clients!r} must look like 1,4,16")
    if not levels or levels[0] != 1 or any(c < 1 or c > 256 for c in levels):
        fail(f"--clients {clients!r}: the first level must be 1 and each between 1 and 256")
    if requests < 1:
        fail(f"--requests must be >= 1, got {requests}")
    for out in (json_out, markdown_out, plot):
        if out is not None:
            check_output_location(out)
    if style:
        styles = [read_style_file(p) for p in style]
    else:
        from stylegen_trt.demo.data import heldout_swatches

        styles = [png_bytes(image) for _, image in heldout_swatches()[::2]] + [png_bytes(heldout_swatches()[1][1])]
    settings = load.LoadSettings(clients=levels, requests=requests, steps=steps)
    with contextlib.ExitStack() as stack:
        if url is None:
            from stylegen_trt.serve.repo import write_model_repository
            from stylegen_trt.serve.server import running_server

            serve_settings = _serve_settings(bundle, backend, "auto", threads, "auto", max_batch, max_queue_delay_ms,
                                             instances, residual_cache_mb)
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stylegen-bench-serve-")))
            repo = write_model_repository(tmp / "repo", serve_settings)
            server = stack.enter_context(running_server(repo, log_path=tmp / "server.log"))
            url, server_pid = server.http_url, server.process.pid
        else:
            server_pid = None
        results = load.run_load(url, styles, settings, server_pid=server_pid)
    results["machine"] = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}. "
    command = shlex.join(["stylegen-trt", "bench-serve", *sys.argv[2:]])
    if json_out is not None:
        atomic_write_bytes(json_out, (json.dumps(results, indent=2) + "\n").encode())
    if markdown_out is not None and plot is None:
        plot = markdown_out.with_name(markdown_out.stem + "-load.png")
    if plot is not None:
        load.plot(results, plot)
    if markdown_out is not None:
        name = os.path.relpath(plot, markdown_out.parent) if plot is not None else None
        atomic_write_bytes(markdown_out, load.markdown(results, command, name).encode())
    for lv in results["levels"]:
        typer.echo(f"{lv['clients']:>3} clients: {lv['images_per_s']:.2f} images/s, p50 {lv['p50_s']:.2f} s, "
                   f"p95 {lv['p95_s']:.2f} s, p99 {lv['p99_s']:.2f} s, errors {len(lv['errors'])}, "
                   f"max diff vs solo {lv['max_diff_vs_solo']}/255")
    for g in results["goals"]:
        typer.echo(f"{g['name']}: {g['value']:.3f} ({g['op']} {g['threshold']}): {'met' if g['met'] else 'MISSED'}")
    if not all(g["met"] for g in results["goals"] if g["name"].startswith(("every", "answers"))):
        raise typer.Exit(1)


def main() -> None:
    app()
