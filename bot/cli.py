"""Command line for the core, without Discord: same registry, same model store as the bot.

python -m bot.cli train --guild G --handle H --file F|URL [--base-model M] [--method lora|full] [--epochs N]
python -m bot.cli train --guild G --handle H --file NEW --continue
python -m bot.cli generate --guild G --handle H [--prompt P] [-n N]
python -m bot.cli list --guild G
python -m bot.cli delete --guild G --handle H
python -m bot.cli report --guild G --handle H [--recompute]
python -m bot.cli rollback --guild G --handle H
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from tqdm import tqdm

from bot.config import SettingsError, load_settings
from bot.core.errors import UserError
from bot.core.handles import RegistryError
from bot.core.ingest import ingest, ingest_path
from bot.core.service import PersonaService
from bot.core.training import JobOutcome, TrainProgress, continued_line, queued_line, report_line
from bot.runtime.logs import quiet_libraries
from bot.runtime.shutdown import cancel_leftover_tasks


class ProgressBar:
    """A training's progress on stderr, drawn by tqdm from the core's progress events."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def update(self, progress: TrainProgress) -> None:
        if progress.phase != "training" or not progress.total_steps:
            if self.bar is not None:
                self.bar.set_description(progress.phase)
            return
        if self.bar is None:
            self.bar = tqdm(total=progress.total_steps, initial=progress.step, unit="step", file=sys.stderr)
        self.bar.set_description("training")
        eta = f"{progress.eta_seconds:.0f}s" if progress.eta_seconds is not None else "?"
        most = "at most " if progress.may_end_early else ""
        self.bar.set_postfix_str(f"loss {progress.loss:.3f}, ETA {most}{eta}", refresh=False)
        self.bar.update(progress.step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def is_link(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


async def cmd_train(core: PersonaService, args: argparse.Namespace) -> int:
    if is_link(args.file):  # downloaded like /train new url: (same caps, same address checks)
        result = await core.downloads.read(args.file, ingest)
    else:  # an archive .zip on disk is read in place, whatever its size
        result = await asyncio.to_thread(ingest_path, args.file)
    print(result.stats.as_markdown())
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    job = await queue_training(core, args, result)
    finished: asyncio.Future[JobOutcome] = asyncio.get_running_loop().create_future()
    bar = ProgressBar()

    def on_event(event: str, *args) -> None:
        if event == "training_progress" and args[0].id == job.id:
            bar.update(args[1])
        elif event == "training_finished" and args[0].job.id == job.id and not finished.done():
            finished.set_result(args[0])

    core.set_event_sink(on_event)
    try:
        outcome = await finished
    except asyncio.CancelledError:
        await core.trainings.cancel(args.guild, job.id)
        raise
    finally:
        bar.close()
    if outcome.state != "done":
        print(f"error: training {outcome.state}: {outcome.error or ''}", file=sys.stderr)
        return 1
    m = outcome.model.metrics
    print(f"Saved {outcome.model.handle} to {core.model_location(outcome.model)}")
    grown = continued_line(m)
    print(f"version {outcome.model.version_label}" + (f", {grown}" if grown else ""))
    if m.get("val_loss") is not None:
        print(
            f"validation loss {m['initial_val_loss']:.3f} -> {m['val_loss']:.3f}, "
            f"perplexity {m['val_perplexity']:.1f}"
        )
    if m.get("stopped_early"):
        print(f"{m['stopped_early'][0].upper()}{m['stopped_early'][1:]} (TRAIN_PATIENCE).")
    if m.get("voice_report"):
        print(f"voice report: {report_line(m['voice_report'])}")
    return 0


async def queue_training(core: PersonaService, args: argparse.Namespace, result):
    """A new training, or with --continue an update of the persona from its current version."""
    if args.continue_:
        if args.method or args.base_model or args.display_name:
            raise UserError("--continue goes on with the persona's own base, method and name.")
        job, plan = await core.trainings.update(
            guild_id=args.guild, handle=args.handle, tweets=result.tweets, stats=result.stats.as_dict()
        )
        print(f"Job #{job.id} queued for {job.handle}. {queued_line(plan, job.continues)}")
        return job
    job = await core.trainings.submit(
        guild_id=args.guild,
        handle=args.handle,
        tweets=result.tweets,
        stats=result.stats.as_dict(),
        display_name=args.display_name,
        method=args.method,
        epochs=args.epochs,
        base_model=args.base_model,
    )
    print(f"Job #{job.id} queued for {job.handle}.")
    return job


async def cmd_rollback(core: PersonaService, args: argparse.Namespace) -> int:
    back, gone = await core.versions.rollback(args.guild, args.handle)
    print(f"{back.handle} is back to {back.version_label}; {gone.version_label} was deleted.")
    return 0


async def cmd_generate(core: PersonaService, args: argparse.Namespace) -> int:
    model, tweets = await core.generate(args.guild, args.handle, args.prompt or "", args.n)
    for tweet in tweets:
        print(f"{model.display_name} (@{model.handle}): {tweet}")
    return 0


async def cmd_list(core: PersonaService, args: argparse.Namespace) -> int:
    models = await core.list_models(args.guild)
    if not models:
        print("No models in this guild.")
    for m in models:
        kept = m.stats.get("kept", "?")
        row = f"{m.handle:24} {m.display_name:24} {m.method:8} {kept!s:>6} tweets"
        print(f"{row}  {m.version_label:4} {m.status}")
    for job in await core.trainings.list(args.guild, active_only=True):
        print(f"{job.handle:24} job #{job.id} {job.state}")
    return 0


async def cmd_delete(core: PersonaService, args: argparse.Namespace) -> int:
    model = await core.delete_model(args.guild, args.handle)
    print(f"Deleted {model.handle}.")
    return 0


async def cmd_report(core: PersonaService, args: argparse.Namespace) -> int:
    model, report = await core.reports.show(args.guild, args.handle, recompute=args.recompute)
    print(f"@{model.handle}: {report_line(report)}")
    before, after = report.get("perplexity_before"), report.get("perplexity_after")
    if before is not None and after is not None:
        print(f"held-out perplexity {before:.1f} -> {after:.1f}")
    print(f"{report['posts']} generated posts vs {report['held_out_posts']} held-out posts of the person")
    for example in report.get("examples") or []:
        print(f"  e.g. {example}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot.cli", description="tweetalike without Discord")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune a model on a file of posts")
    train.add_argument("--guild", type=int, required=True)
    train.add_argument("--handle", required=True)
    train.add_argument(
        "--file",
        required=True,
        help="tweets.js, archive .zip, CSV, JSON/JSONL or text (any of them gzipped), or an http(s) link",
    )
    train.add_argument("--display-name")
    train.add_argument("--base-model", help="hub id, local folder or .gguf file (default: BASE_MODEL)")
    train.add_argument("--method", choices=["lora", "full"])
    train.add_argument("--epochs", type=int)
    train.add_argument(
        "--continue",
        dest="continue_",
        action="store_true",
        help="update the persona: go on from its current version with the file's new posts",
    )
    train.set_defaults(run=cmd_train)

    generate = sub.add_parser("generate", help="write tweets with a trained model")
    generate.add_argument("--guild", type=int, required=True)
    generate.add_argument("--handle", required=True)
    generate.add_argument("--prompt", default="")
    generate.add_argument("-n", type=int, default=5)
    generate.set_defaults(run=cmd_generate)

    listing = sub.add_parser("list", help="list a guild's models")
    listing.add_argument("--guild", type=int, required=True)
    listing.set_defaults(run=cmd_list)

    delete = sub.add_parser("delete", help="delete a model")
    delete.add_argument("--guild", type=int, required=True)
    delete.add_argument("--handle", required=True)
    delete.set_defaults(run=cmd_delete)

    report = sub.add_parser("report", help="show a persona's voice report (does it sound like the person?)")
    report.add_argument("--guild", type=int, required=True)
    report.add_argument("--handle", required=True)
    report.add_argument("--recompute", action="store_true", help="write the posts and measure them again")
    report.set_defaults(run=cmd_report)

    rollback = sub.add_parser("rollback", help="go back to a persona's previous version")
    rollback.add_argument("--guild", type=int, required=True)
    rollback.add_argument("--handle", required=True)
    rollback.set_defaults(run=cmd_rollback)
    return parser


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    core = PersonaService(settings)
    await core.start(run_queue=args.command == "train")
    try:
        return await args.run(core, args)
    finally:
        await core.close()
        await cancel_leftover_tasks()  # so the command returns (see bot/runtime/shutdown.py)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    try:
        return asyncio.run(run(args))
    except (SettingsError, UserError, RegistryError, OSError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
