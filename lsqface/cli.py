"""The lsqface command line. Nothing else in the package parses arguments.

Every command is a small function that turns parsed arguments into library
calls. A ``LsqfaceError`` raised anywhere below is printed as one sentence
(``lsqface: error: ...``) and the command exits with status 2; nothing else
is caught, so a real bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

from lsqface import __version__
from lsqface.errors import LsqfaceError


def _command_model_build(args: argparse.Namespace) -> int:
    from lsqface.morphable.cache import load_uv_model

    uv_model = load_uv_model(
        source=args.source,
        size=args.size,
        download=args.download,
        rebuild=args.rebuild,
        region=args.region,
        landmarks=args.landmarks,
    )
    print(uv_model.summary())
    return 0


def _command_model_show(args: argparse.Namespace) -> int:
    from lsqface.morphable.cache import load_uv_model
    from lsqface.render.model_pictures import write_model_pictures

    uv_model = load_uv_model(
        source=args.source, size=args.size, download=args.download, region=args.region, landmarks=args.landmarks
    )
    for path in write_model_pictures(uv_model, args.output):
        print(path)
    return 0


def _command_validate_lighting(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lsqface.lighting.validate import (
        face_normal_image,
        format_table,
        sphere_normal_image,
        validate_inverse_lighting,
        write_validation_picture,
    )

    examples = validate_inverse_lighting(examples=args.examples, seed=args.seed, points=args.points)
    print(f"Inverse SH lighting, {args.examples} random lightings, {args.points} sphere points (seed {args.seed}):")
    print(format_table(examples))
    surface = "sphere"
    normals, mask = sphere_normal_image()
    if not args.sphere:
        try:
            from lsqface.morphable.cache import load_uv_model

            normals, mask = face_normal_image(load_uv_model())
            surface = "mean face"
        except (ImportError, LsqfaceError) as error:
            print(f"No face model ({error}); shading a sphere instead.")
    path = write_validation_picture(examples, Path(args.output) / "validate-lighting.png", normals, mask)
    print(f"{path} ({surface})")
    return 0


#: Bounds of the numeric options, checked before anything is read or allocated: (smallest, largest).
#: A box is further checked against each photo (lsqface.outputs.batch.check_box).
OPTION_BOUNDS = {
    "batch_size": (1, 256),
    "refine": (0, 10),
    "picture_size": (0, 16384),
    "synthetic": (0, 1_000_000),
    "examples": (1, 1000),
    "points": (1, 10_000_000),
    "steps": (0, 100_000_000),
    "ensemble": (1, 4),
    "threads": (1, 256),
    "max_side": (64, 8192),
}
#: --size: the UV image of ``model`` (pixels), and the synthetic faces of ``evaluate`` and ``compare`` (pixels).
SIZE_BOUNDS = {"model": (16, 2048), "evaluate": (16, 1024), "compare": (16, 1024)}
#: Largest box coordinate or side, pixels (a box is cropped and resampled to the network's input).
BOX_LIMIT = 1_000_000


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (no usage block), like every other error."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"lsqface: error: {message[0].upper() + message[1:]}; see {self.prog} --help.\n")


def _check_options(args: argparse.Namespace) -> None:
    """Refuse numeric options outside their bounds (``OPTION_BOUNDS``) and unusable devices, in one sentence."""
    for name, (low, high) in OPTION_BOUNDS.items():
        value = getattr(args, name, None)
        if value is not None and not low <= value <= high:
            flag = "--" + name.replace("_", "-")
            raise LsqfaceError(f"{flag} must be between {low} and {high}, not {value}.")
    size = getattr(args, "size", None)
    if size is not None and args.command in SIZE_BOUNDS:
        low, high = SIZE_BOUNDS[args.command]
        if not low <= size <= high:
            raise LsqfaceError(f"--size must be between {low} and {high} pixels, not {size}.")
    for name in ("smoothing", "refine_fraction"):
        value = getattr(args, name, None)
        if value is not None and not math.isfinite(value):
            raise LsqfaceError(f"--{name.replace('_', '-')} must be a finite number, not {value}.")
    if getattr(args, "device", None) is not None:
        _check_device(args.device)


def _check_device(text: str) -> None:
    """Refuse a device PyTorch does not know, or one this machine lacks."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise LsqfaceError(f"Unknown --device '{text}'; pass cpu, or cuda (cuda:0, cuda:1, ...) on a machine with an NVIDIA GPU.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LsqfaceError(f"--device {text} needs a CUDA GPU and a CUDA build of PyTorch, which this machine lacks; pass --device cpu.")
        if device.index is not None and device.index >= count:
            raise LsqfaceError(f"--device {text} names GPU {device.index}, but this machine has {count}; pass cuda:0 to cuda:{count - 1}.")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise LsqfaceError(f"--device {text} needs an Apple GPU, which this machine lacks; pass --device cpu.")
    elif device.type != "cpu":
        raise LsqfaceError(f"--device {text} is not one lsqface runs on; pass cpu or cuda.")


def _parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise LsqfaceError(f"--bbox takes four numbers x,y,width,height in pixels, not '{text}'.")
    if not all(math.isfinite(value) and abs(value) <= BOX_LIMIT for value in values) or min(values[2:]) < 1:
        raise LsqfaceError(f"--bbox takes finite pixels x,y,width,height with width and height from 1 to "
                           f"{BOX_LIMIT:,}, not '{text}'.")
    return values


def _parse_ranges(text: str) -> list[float]:
    try:
        ranges = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        ranges = []
    if not ranges or len(ranges) > 64 or not all(math.isfinite(value) and 0 <= value <= 360 for value in ranges):
        raise LsqfaceError(f"--ranges takes up to 64 comma-separated degrees from 0 to 360 such as 0,15,45,90,180, "
                           f"not '{text}'.")
    return ranges


def _reconstructor(args: argparse.Namespace, uv_model=None):
    """The Reconstructor of ``--checkpoint`` on ``--device`` with ``--preset`` and ``--threads``, on the face
    model of ``--source``/``--region`` if given."""
    from lsqface.morphable.cache import load_uv_model
    from lsqface.reconstruct import Reconstructor

    _set_threads(args)
    if uv_model is None and (args.source or args.region):
        uv_model = load_uv_model(source=args.source, region=args.region)
    return Reconstructor.from_checkpoint(args.checkpoint, uv_model=uv_model, device=args.device, preset=args.preset)


def _set_threads(args: argparse.Namespace) -> None:
    """``--threads N``: the CPU threads torch uses (default 1, see its help)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _own_outputs(output: str) -> list[Path]:
    """The files lsqface recorded writing in the output folder (never read back as inputs)."""
    from lsqface.outputs.batch import OutputFolder

    folder = Path(output)
    if not folder.is_dir():
        return []
    try:
        return [folder / name for name in OutputFolder(folder).all_names()]
    except OSError:
        return []


def _command_reconstruct(args: argparse.Namespace) -> int:
    from lsqface.outputs.batch import demo_photo, expand_inputs, open_output_folder, reconstruct_files

    kinds = [kind.strip() for kind in args.save.split(",") if kind.strip()]
    box = _parse_box(args.bbox)
    if box is not None and args.detect is not None:
        raise LsqfaceError("--bbox frames the face itself; give it without --detect or --no-detect.")
    from lsqface.outputs.save import SAVE_KINDS

    if not kinds or set(kinds) - set(SAVE_KINDS):
        raise LsqfaceError(f"--save takes one or more of {','.join(SAVE_KINDS)}, not '{args.save}'.")
    inputs = expand_inputs(args.inputs or [demo_photo()], exclude=_own_outputs(args.output))
    open_output_folder(args.output, inputs)  # refuse an unusable folder before loading the network
    reconstructor = _reconstructor(args)
    if args.refine is not None:
        import dataclasses

        reconstructor.config = dataclasses.replace(reconstructor.config, refine_passes=args.refine)
    report = reconstruct_files(
        reconstructor, inputs, args.output, kinds=kinds, batch_size=args.batch_size, box=box, detect=args.detect,
        progress=not args.quiet, picture_side=args.picture_size, redo=args.redo, largest_face=args.largest_face,
    )
    if report.skipped:
        print(f"lsqface: skipped {len(report.skipped)} images whose outputs in {args.output} are complete "
              "(--redo writes them again)", file=sys.stderr)
    for path, reason in report.failed.items():
        print(f"lsqface: failed: {path}: {reason}", file=sys.stderr)
    for path, reason in report.doubtful.items():
        print(f"lsqface: warning: {path}: {reason}", file=sys.stderr)
    done = len(report.written) + len(report.skipped)
    already = f" ({len(report.skipped)} already there)" if report.skipped else ""
    print(f"reconstructed {done} of {len(inputs)} images into {args.output}{already}")
    return 0 if report.ok else 1


def _command_video(args: argparse.Namespace) -> int:
    from lsqface.outputs.video import reconstruct_video

    box = _parse_box(args.bbox)
    summary = reconstruct_video(
        _reconstructor(args), args.input, args.output, smoothing=args.smoothing, batch_size=args.batch_size, box=box,
        progress=not args.quiet,
    )
    print(summary)
    return 130 if summary.interrupted else 0


def _command_evaluate_real(args: argparse.Namespace) -> int:
    """``lsqface evaluate --real SPLIT``: the real-photo benchmark, on its own (lsqface.evaluate.real)."""
    from lsqface.errors import ConfigError
    from lsqface.evaluate.real import evaluate_real, write_real_report
    from lsqface.morphable.cache import load_uv_model
    from lsqface.reconstruct import Reconstructor

    others = [flag for flag, given in (("--synthetic", args.synthetic > 0), ("--mafl", args.mafl), ("--aflw", args.aflw),
                                       ("--folder", args.folder), ("--identity", args.identity), ("--oracle", args.oracle))
              if given]
    if others:
        raise ConfigError(f"--real writes a report of its own; run {', '.join(others)} in a separate lsqface evaluate.")
    if args.similarity < 0:
        raise ConfigError(f"--similarity takes a count of 0 or more pictures per face, not {args.similarity}.")
    uv_model = load_uv_model(source=args.source, region=args.region) if args.source or args.region else None
    _set_threads(args)
    reconstructor = Reconstructor.from_checkpoint(args.checkpoint, uv_model=uv_model, device=args.device,
                                                  preset=args.preset)
    benchmark = evaluate_real(reconstructor, args.real, args.similarity, batch_size=args.batch_size,
                              folder=args.real_faces, progress=not args.quiet, dlib_examples=args.dlib_examples)
    command = "lsqface " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["evaluate"] else "lsqface evaluate"
    checkpoint = args.checkpoint or "the shipped lsqface/weights/default.pt"
    path = write_real_report(args.output, benchmark, notes=[f"Command: `{command}`", f"Checkpoint: {checkpoint}"])
    for name, reason in {**benchmark.missing_peers, **benchmark.skipped}.items():
        print(f"lsqface: skipped {name}: {reason}", file=sys.stderr)
    print(path)
    return 0


def _command_evaluate(args: argparse.Namespace) -> int:
    from lsqface.evaluate.report import check_request, run_evaluation

    if args.real is not None:
        return _command_evaluate_real(args)
    from lsqface.morphable.cache import load_uv_model

    ranges = _parse_ranges(args.ranges)
    check_request(args.synthetic, args.mafl, args.aflw, args.folder, args.landmarks, args.oracle, args.identity)
    uv_model = load_uv_model(source=args.source, region=args.region) if args.source or args.region or args.oracle else None
    reconstructor = None if args.oracle else _reconstructor(args, uv_model)
    command = "lsqface " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["evaluate"] else "lsqface evaluate"
    path = run_evaluation(
        args.output, reconstructor, uv_model, synthetic_count=args.synthetic, ranges=ranges, synthetic_size=args.size,
        mafl=args.mafl, aflw=args.aflw, folder_images=args.folder, folder_landmarks=args.landmarks, oracle=args.oracle,
        batch_size=args.batch_size, identity=args.identity, descriptor=None if args.descriptor == "dlib" else args.descriptor,
        render_over=args.render_over, detect=args.detect, progress=not args.quiet, notes=[f"Command: `{command}`"],
        validation=args.validation, look=args.look,
    )
    print(path)
    return 0


def _command_compare(args: argparse.Namespace) -> int:
    from lsqface.baselines.compare import run_comparison
    from lsqface.morphable.cache import load_uv_model

    ranges = _parse_ranges(args.ranges)
    _set_threads(args)
    uv_model = load_uv_model(source=args.source, region=args.region)
    command = "lsqface " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else "lsqface compare"
    path = run_comparison(
        args.output, args.checkpoints, uv_model, names=args.names, ranges=ranges, count=args.synthetic, size=args.size,
        batch_size=args.batch_size, device=args.device, progress=not args.quiet, notes=[f"Command: `{command}`"],
        previous=args.previous or (),
    )
    print(path)
    return 0


def _command_backgrounds(args: argparse.Namespace) -> int:
    import logging

    from lsqface.data.backgrounds import collect_backgrounds

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    found = collect_backgrounds(args.sources, args.output, max_side=args.max_side, reject_faces=not args.keep_faces)
    print(f"{len(found)} background pictures in {args.output}")
    return 0


def _command_export(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from lsqface.errors import ConfigError
    from lsqface.nets.checkpoint import (average_checkpoints, check_settings, inference_checkpoint, load_checkpoint,
                                         network_from_checkpoint, save_checkpoint)

    payload = load_checkpoint(args.checkpoint)
    network_from_checkpoint(payload, args.checkpoint)  # refuse a damaged file before writing anything
    if args.average:
        others = [load_checkpoint(path) for path in args.average]
        for other, path in zip(others, args.average):
            network_from_checkpoint(other, path)
        payload = average_checkpoints([payload, *others], [args.checkpoint, *args.average])
    notes = None
    if args.notes is not None:
        try:
            notes = json.loads(Path(args.notes).read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"--notes {args.notes} is not a readable JSON file ({error}).") from None
    shipped = inference_checkpoint(payload, notes)
    if args.solver:
        from lsqface.config import from_dict
        from lsqface.solver.fit import SolverConfig

        settings = dict(shipped.get("solver_config") or {})
        for item in args.solver:
            key, separator, value = item.partition("=")
            if not separator:
                raise ConfigError(f"--solver takes KEY=VALUE (e.g. robust_iterations=5), got '{item}'.")
            try:
                settings[key] = json.loads(value)
            except ValueError:
                settings[key] = value
        shipped["solver_config"] = dataclasses.asdict(from_dict(SolverConfig, settings))
    changes = {key: value for key, value in (("rotation_ensemble", args.ensemble), ("refine_passes", args.refine),
                                             ("refine_fraction", args.refine_fraction)) if value is not None}
    if changes:
        from lsqface.reconstruct import ReconstructConfig

        settings = {**(shipped.get("reconstruct_config") or {}), **changes}
        ReconstructConfig(**settings)  # refuses an ensemble other than 1, 2 or 4, negative passes, a bad fraction
        shipped["reconstruct_config"] = settings
    check_settings({**payload, **shipped}, args.output)  # refuse settings reconstruct would refuse to load
    path = save_checkpoint(args.output, shipped)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _command_train_mofa(args: argparse.Namespace) -> int:
    import logging

    from lsqface.baselines.train_mofa import load_mofa_config, run_mofa

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_mofa_config(args.config)
    summary = run_mofa(config, args.run_dir, resume=args.resume or False, source=args.source, region=args.region,
                       progress=not args.quiet)
    state = "interrupted" if summary["interrupted"] else "finished"
    print(f"train-mofa {state} at step {summary['step']} ({summary['skipped']} batches skipped); checkpoint {summary['checkpoint']}")
    return 130 if summary["interrupted"] else 0


def _command_train_stage(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from lsqface.errors import ConfigError
    from lsqface.train.config import load_train_config
    from lsqface.train.distributed import context_from_environment, finish
    from lsqface.train.trainer import run_stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_train_config(args.config)
    if args.steps is not None:
        section = getattr(config, args.command)
        config = dataclasses.replace(config, **{args.command: dataclasses.replace(section, steps=args.steps)})
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    if getattr(args, "photos", None):
        if not Path(args.photos).is_dir():
            raise ConfigError(f"--photos {args.photos} is not a folder; pass a folder of face photos.")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, photos=str(args.photos)))
        if config.train.supervision != "mixed":
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, supervision="mixed"))
    if getattr(args, "backgrounds", None):
        if not Path(args.backgrounds).is_dir():
            raise ConfigError(f"--backgrounds {args.backgrounds} is not a folder; make one with lsqface backgrounds.")
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, background="natural", background_root=str(args.backgrounds)))
    context = context_from_environment(args.device)
    try:
        summary = run_stage(
            config, args.command, args.run_dir, resume=args.resume or False, init=args.init,
            source=args.source, region=args.region, context=context, progress=not args.quiet, until=args.until,
        )
    finally:
        finish(context)
    if context.is_main:
        state = "interrupted" if summary.interrupted else "finished"
        print(f"{args.command} {state} at step {summary.step} ({summary.skipped} batches skipped); checkpoint {summary.checkpoint}")
    return 130 if summary.interrupted else 0


def _add_face_model_options(parser: argparse.ArgumentParser) -> None:
    """--source, --region and --quiet: every command that loads the face model and shows progress."""
    parser.add_argument("--source", default=None, help="face model source, if not the default ICT-FaceKit")
    parser.add_argument("--region", choices=("narrow", "full"), default=None, help="ICT-FaceKit face area")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_run_options(parser: argparse.ArgumentParser, config_help: str, default_run_dir: str) -> None:
    """The options of the training commands (pretrain, train, train-mofa): config, run folder, resuming."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--run-dir", default=default_run_dir,
                        help=f"folder for checkpoints, logs and TensorBoard (default {default_run_dir})")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                        help="continue exactly from RUN_DIR/last.pt, or from CHECKPOINT")
    _add_face_model_options(parser)


def _add_train_options(parser: argparse.ArgumentParser, default_run_dir: str) -> None:
    _add_run_options(parser, "training TOML file, e.g. configs/cpu.toml", default_run_dir)
    parser.add_argument("--init", default=None, metavar="CHECKPOINT", help="start the network from this checkpoint's weights (a narrower network of the same layout starts grown)")
    parser.add_argument("--steps", type=int, default=None, help="override the config's step count")
    parser.add_argument("--until", type=int, default=None, metavar="STEP",
                        help="stop after this step; the learning-rate schedule still spans the config's steps "
                             "and --resume continues the run")
    parser.add_argument("--seed", type=int, default=None,
                        help="override the config's seed (network initialisation, data and pixel sampling)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available); under torchrun cuda:LOCAL_RANK")
    parser.add_argument("--photos", default=None, metavar="DIR",
                        help="a folder of your own unlabelled face photos for train.supervision = 'mixed' "
                             "(configs/finetune-photos.toml; overrides data.photos)")
    parser.add_argument("--backgrounds", default=None, metavar="DIR",
                        help="a folder of face-free pictures behind the synthetic faces (lsqface backgrounds makes one; "
                             "overrides data.background_root)")


def _add_model_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default=None,
        help="ICT-FaceKit .tar.xz, FaceXModel/ folder or GitHub zip, or a Basel Face Model 2017 .h5 "
        "(default: ICT-FaceKit found in ../shared/data or the cache)",
    )
    parser.add_argument("--size", type=int, default=320, help="UV image size in pixels (default 320)")
    parser.add_argument(
        "--region",
        choices=("narrow", "full"),
        default=None,
        help="ICT-FaceKit face area: narrow (forehead to chin, the default) or full (with scalp, ears and neck)",
    )
    parser.add_argument(
        "--landmarks",
        default=None,
        help="text or JSON file of the 68 landmark vertex indices (needed for BFM 2017; ICT: lsqface's set, "
             "lsqface.morphable.ict.LANDMARKS_68)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download ICT-FaceKit from its GitHub release if no local copy is found (needs internet)",
    )


def _add_network_options(parser: argparse.ArgumentParser, checkpoint: bool = True, unit: str = "images") -> None:
    """The options of the commands that run networks (reconstruct, video, evaluate, compare): the checkpoint
    (compare takes several, its own way), device, batch size, face model, progress bars."""
    if checkpoint:
        parser.add_argument("--checkpoint", default=None, help="network checkpoint (default: the one shipped with lsqface)")
        parser.add_argument(
            "--preset", choices=("accurate", "fast", "reference"), default="accurate",
            help="accurate (default): the checkpoint's passes (turned copies, robust passes, reprojection steps, "
            "re-framing) with mixed-precision solves; fast: one network pass and one solve, about 5x faster and "
            "less accurate "
            "(docs/performance.md); reference: the checkpoint's settings as stored, float64 solves (slowest)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads (default 1: the fit is thousands of small operations, each of which waits "
                        "for a second thread; on 2 cores with one busy, 1 thread is 2-5x faster, docs/performance.md)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help=f"{unit} per forward pass (default 8)")
    _add_face_model_options(parser)


def _add_synthetic_options(parser: argparse.ArgumentParser, default_count: int) -> None:
    """The synthetic benchmark's options (evaluate, compare): faces per range, the ranges, the image size."""
    none = ": none" if default_count == 0 else ""
    parser.add_argument("--synthetic", type=int, default=default_count, metavar="N",
                        help=f"synthetic faces per rotation range (default {default_count}{none})")
    parser.add_argument("--ranges", default="0,15,45,90,180", help="in-plane rotation ranges in degrees (default 0,15,45,90,180)")
    parser.add_argument("--size", type=int, default=128, help="side of the synthetic images in pixels (default 128)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lsqface",
        description="Unsupervised 3D face reconstruction from a single photograph.",
    )
    parser.add_argument("--version", action="version", version=f"lsqface {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    model = commands.add_parser("model", help="build and inspect the UV-3DMM")
    model_commands = model.add_subparsers(dest="model_command", metavar="ACTION")
    model_commands.required = True

    build = model_commands.add_parser("build", help="build (or load from the cache) the UV-3DMM and print a summary")
    _add_model_source_options(build)
    build.add_argument("--rebuild", action="store_true", help="ignore the cache and build again")
    build.set_defaults(handler=_command_model_build)

    show = model_commands.add_parser("show", help="write PNG pictures of the face model and its UV-3DMM")
    _add_model_source_options(show)
    show.add_argument("-o", "--output", default="lsqface-model", help="folder for the pictures (default lsqface-model)")
    show.set_defaults(handler=_command_model_show)

    lighting = commands.add_parser(
        "validate-lighting", help="repeat the seed's inverse-SH lighting check (Fig. 11): error table and picture"
    )
    lighting.add_argument("--examples", type=int, default=4, help="random lightings (default 4)")
    lighting.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    lighting.add_argument("--points", type=int, default=100000, help="random sphere points (default 100000)")
    lighting.add_argument("--sphere", action="store_true", help="shade a sphere, not the face model's mean face")
    lighting.add_argument("-o", "--output", default="lsqface-lighting", help="folder for the picture (default lsqface-lighting)")
    lighting.set_defaults(handler=_command_validate_lighting)


    reconstruct = commands.add_parser(
        "reconstruct",
        help="reconstruct faces from photos: meshes, parameters, maps and pictures",
        description="Reconstruct a 3D face from each photo. Inputs are files, folders (searched recursively) "
        "or quoted glob patterns. A bad image is reported and skipped; the exit status is then 1.",
    )
    reconstruct.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image files, folders or glob patterns (default: the built-in demo photo, matplotlib's grace_hopper.jpg)",
    )
    reconstruct.add_argument("-o", "--output", required=True, help="folder for the results")
    reconstruct.add_argument(
        "--save", default="obj,texture,ply,json,npz,pictures",
        help="comma-separated outputs: obj,texture,ply,json,npz,pictures (default: all; the photo texture of the "
        "OBJ is 'texture')"
    )
    _add_network_options(reconstruct)
    reconstruct.add_argument("--bbox", default=None, help="face box x,y,width,height in pixels, for photos where the face is small")
    framing = reconstruct.add_mutually_exclusive_group()
    framing.add_argument(
        "--detect", dest="detect", action="store_const", const=True, default=None,
        help="require the face detector (dlib HOG at eight rotations; pip install 'lsqface[detect]'): every face "
        "as STEM_face0, STEM_face1, ..., and a photo without a face fails. Default: automatic framing, the detector "
        "where it is installed (one face: STEM; several: STEM_faceK), the whole photo where it finds no face",
    )
    framing.add_argument("--no-detect", dest="detect", action="store_const", const=False,
                         help="reconstruct the whole photo, without looking for faces")
    reconstruct.add_argument("--largest-face", action="store_true",
                             help="of the faces found, reconstruct the largest only")
    reconstruct.add_argument(
        "--refine", type=int, default=None, metavar="N",
        help="times to frame the photo again on the fitted face and refit (default: the checkpoint's; the shipped "
        "model does 1; 0 is faster)",
    )
    reconstruct.add_argument(
        "--picture-size", type=int, default=None, metavar="PIXELS",
        help="longest side of the pictures drawn over the photo (default 1024; 0: the photo's own size, slower for "
        "large photos)",
    )
    reconstruct.add_argument(
        "--redo", action="store_true",
        help="reconstruct again the photos whose outputs in the -o folder are complete (default: skip them, so an "
        "interrupted run goes on where it stopped)",
    )
    reconstruct.set_defaults(handler=_command_reconstruct)

    stages = {
        "pretrain": ("pretrain the network on roughly aligned faces with shared targets (seed F)",
                     "Supervised pretraining: the 3DMM mean shape aligned to the average 5-landmark position gives "
                     "one correspondence, depth and confidence target, moved with each image by a random similarity."),
        "train": ("train the network without landmarks: least-squares fit, render, robust photometric loss",
                  "Unsupervised main training (no landmarks, no ground truth); start it from a pretraining "
                  "checkpoint with --init."),
    }
    for name, (summary, description) in stages.items():
        stage = commands.add_parser(name, help=summary, description=f"{description} Runs under torchrun for several processes.")
        _add_train_options(stage, f"runs/{name}")
        stage.set_defaults(handler=_command_train_stage)

    video = commands.add_parser(
        "video", help="reconstruct every frame of a video: a six-panel MP4 and one JSON line per frame",
        description="Reconstruct each frame of a video. Writes OUTPUT (H.264 MP4: input, reconstruction, geometry "
        "over correspondence, confidence, depth) and OUTPUT with .jsonl (camera, pose, landmarks and coefficients "
        "per frame). A frame whose fit fails is drawn with its maps only and gets an \"error\" line.",
    )
    video.add_argument("input", metavar="INPUT", help="video file (anything ffmpeg reads)")
    video.add_argument("-o", "--output", required=True, help="MP4 to write; the .jsonl goes beside it")
    _add_network_options(video, unit="frames")
    video.add_argument(
        "--smoothing", type=float, default=0.0,
        help="temporal smoothing in [0, 1): weight of the past in an exponential moving average of the fitted "
        "parameters (default 0, off; 0.5 halves jitter with one frame of lag)",
    )
    video.add_argument("--bbox", default=None, help="face box x,y,width,height in pixels, used for every frame")
    video.set_defaults(handler=_command_video)

    evaluate = commands.add_parser(
        "evaluate", help="measure landmark, shape and pose errors; write a Markdown report, plots and JSON lines",
        description="Evaluate a network: 5-landmark error (direct from the correspondence map and fitted) on MAFL, "
        "AFLW or any folder with a landmark file, and errors against in-plane rotation on synthetic faces with "
        "ground truth. --oracle evaluates the synthetic faces' true maps instead: a self-check of the pipeline.",
    )
    evaluate.add_argument("-o", "--output", required=True, help="folder for report.md, plots and JSON lines")
    _add_synthetic_options(evaluate, default_count=0)
    evaluate.add_argument("--mafl", default=None, metavar="ROOT", help="CelebA folder with MAFL/: evaluate the MAFL test split")
    evaluate.add_argument("--aflw", default=None, metavar="ROOT", help="aflw_release-2 folder: evaluate its test split")
    evaluate.add_argument("--folder", default=None, metavar="DIR", help="image folder whose landmarks --landmarks gives")
    evaluate.add_argument("--landmarks", default=None, metavar="FILE", help="lines 'name x1 y1 ... x5 y5' for --folder, or 'dlib': compare with dlib's 68-point predictor "
                          "on photos without annotations (lsqface[identity]; see docs/evaluation.md)")
    evaluate.add_argument("--look", choices=("mask", "photo", "other"), default="mask",
                          help="synthetic faces: the fitted face region alone (mask, default), the whole-head "
                               "photographs the default model trains on (photo), or a second look it never trains "
                               "on (other)")
    evaluate.add_argument("--oracle", action="store_true", help="evaluate the synthetic faces' true maps (no network)")
    evaluate.add_argument("--validation", action="store_true",
                          help="draw the synthetic faces from the validation seeds, kept apart from the benchmark's: "
                          "tune settings (e.g. export --refine-fraction) on these, report the benchmark")
    evaluate.add_argument("--identity", default=None, metavar="DIR",
                          help="photos named after their people (obama.jpg, obama2.jpg, ...): face-recognition similarity "
                          "of each rendering to its photo against same- and different-person pairs")
    evaluate.add_argument("--descriptor", default="dlib", help="identity descriptor: dlib (pip install 'lsqface[identity]') or an .onnx file")
    evaluate.add_argument("--render-over", choices=("black", "photo"), default="black", help="background of the identity renderings")
    evaluate.add_argument("--detect", action="store_true", help="reconstruct each photo (landmark benchmarks and --identity) in the box of its largest detected "
                          "face, for small faces (lsqface[detect])")
    evaluate.add_argument("--real", choices=("validation", "test"), default=None,
                          help="the real-photo benchmark on its own: every face of fixed public photos at rolls 0/90/180/270 and "
                          "random similarities, lsqface beside dlib and MediaPipe (lsqface[identity], lsqface[peers]; "
                          "docs/evaluation.md). Choose models on validation, report test")
    evaluate.add_argument("--similarity", type=int, default=10, metavar="N",
                          help="random similarity pictures per face for --real (default 10)")
    evaluate.add_argument("--real-faces", default=None, metavar="DIR",
                          help="folder of the six shared portraits for --real (default: ../shared/data/real-faces)")
    evaluate.add_argument("--dlib-examples", default=None, metavar="PATH",
                          help="dlib-19.5.0.tar.gz, whose example photos join --real validation (default: the one "
                          "`make validation-photos` downloads into ~/.cache/lsqface)")
    _add_network_options(evaluate)
    evaluate.set_defaults(handler=_command_evaluate)

    compare = commands.add_parser(
        "compare", help="run several checkpoints (lsqface or MoFA) over one synthetic benchmark into one report",
        description="Evaluate every checkpoint on the same synthetic faces at each in-plane rotation range and write "
        "OUTPUT/report.md: errors, parameter counts and CPU latency per model, the error-against-rotation plot, and "
        "the training-loss curves of MoFA runs whose losses.jsonl lies beside the checkpoint (docs/comparisons.md).",
    )
    compare.add_argument("--checkpoints", nargs="+", default=[], metavar="CHECKPOINT", help="lsqface or MoFA .pt files")
    compare.add_argument("--previous", nargs="+", default=None, metavar="REPORT",
                         help="report folders of earlier compare runs: their models join the new ones (measured on "
                              "the same faces; their checkpoints are not needed)")
    compare.add_argument("--names", nargs="+", default=None, metavar="NAME", help="one label per checkpoint (default: run folder)")
    _add_synthetic_options(compare, default_count=100)
    compare.add_argument("-o", "--output", required=True, help="folder for the report")
    _add_network_options(compare, checkpoint=False)
    compare.set_defaults(handler=_command_compare)

    backgrounds = commands.add_parser(
        "backgrounds", help="gather face-free background pictures for training into one folder",
        description="Collect pictures from folders, picture files and Debian wallpaper packages (.deb files as "
        "apt-get download leaves them; make backgrounds fetches MATE's, GNOME's and KDE Plasma's) into OUTPUT, each "
        "scaled down once, leaving out small ones and any in which dlib finds a face; the photographs installed "
        "packages ship are added. Train on them with lsqface train --backgrounds OUTPUT.",
    )
    backgrounds.add_argument("sources", nargs="+", help="folders, pictures or .deb files")
    backgrounds.add_argument("-o", "--output", required=True, help="the folder to write (added to if it exists)")
    backgrounds.add_argument("--max-side", type=int, default=1024, help="longest side kept, pixels (default 1024)")
    backgrounds.add_argument("--keep-faces", action="store_true",
                             help="do not search the pictures for faces (no dlib needed; only for pictures you know)")
    backgrounds.set_defaults(handler=_command_backgrounds)

    export = commands.add_parser(
        "export", help="write a checkpoint without its training state (smaller; what reconstruct needs)",
        description="Copy a training checkpoint's network, input size, face-model summary and solver settings to "
        "OUTPUT, dropping the optimiser, scheduler and RNG states (a third of the size); the run's config and step "
        "go into its metadata. This is how lsqface/weights/default.pt is made.",
    )
    export.add_argument("checkpoint", help="a .pt file written by lsqface train")
    export.add_argument("-o", "--output", required=True, help="the .pt file to write")
    export.add_argument("--notes", default=None, metavar="JSON", help="a JSON file stored in the metadata (e.g. evaluation.json)")
    export.add_argument("--average", nargs="+", default=None, metavar="CHECKPOINT",
                        help="average the network weights of CHECKPOINT and these (checkpoints of the same run, e.g. "
                        "the last few that keep_every kept); the settings and metadata are CHECKPOINT's")
    export.add_argument("--solver", nargs="+", default=None, metavar="KEY=VALUE",
                        help="change the solver settings reconstruct will use, e.g. robust_iterations=5 shape_weight=100")
    export.add_argument("--ensemble", type=int, default=None, metavar="N",
                        help="quarter-turn copies reconstruct averages the maps over (1, 2 or 4)")
    export.add_argument("--refine", type=int, default=None, metavar="N",
                        help="times reconstruct frames the photo again on the fitted face and refits (0: once only)")
    export.add_argument("--refine-fraction", type=float, default=None, metavar="F",
                        help="the face's width as a fraction of the re-framed square (default 0.6)")
    export.set_defaults(handler=_command_export)

    train_mofa = commands.add_parser(
        "train-mofa", help="train the MoFA baseline (seed P): landmark pretraining, then photometric training",
        description="Train a MoFA-style encoder on synthetic faces: rotation and xy translation, then the full "
        "camera, from landmarks only; then every parameter with the photometric loss, regularisation and (if the "
        "config says) landmarks. Writes RUN_DIR/last.pt, losses.jsonl and tensorboard/; Ctrl-C saves, --resume continues.",
    )
    _add_run_options(train_mofa, "MoFA TOML file, e.g. configs/mofa-similarity-landmarks.toml", "runs/mofa")
    train_mofa.set_defaults(handler=_command_train_mofa)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        _check_options(args)
        return handler(args)
    except LsqfaceError as error:
        print(f"lsqface: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lsqface: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
