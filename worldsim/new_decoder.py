"""Give a world file a retrained decoder: sharper frames, the same latents, nothing else retrained.

A world's DiT generates latents and its VAE's decoder draws them. The decoder runs last and alone, so it can
be trained further by itself (``stage=vae vae.train.decoder_only=true vae.train.init_from=WORLD``) while the
encoder, and so every latent the DiT was trained on and every agent reads, stays bit for bit:

    python -m worldsim.new_decoder checkpoints/carracing.safetensors runs/dec/vae.safetensors --out runs/new.safetensors

The new file holds the world's tensors with the ``vae.decoder.*`` ones replaced (in the world's storage dtype),
the same metadata with the VAE file's training history joined in, and a ``decoder`` entry recording the
change (which VAE file, its step and PSNR, and the whole-VAE id the world had before, under which agents
trained in it recorded its latents). The VAE must have the world's VAE config and exactly its encoder, else
nothing is written. Nothing is written over an existing file unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from worldsim.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from worldsim.models.vae import VAE_KIND
from worldsim.training.history import HISTORY, history_of, joined
from worldsim.world import WORLD_KIND, load_world

DECODER = "vae.decoder."
ENCODER = "vae.encoder."


def new_decoder(world: str | Path, vae: str | Path, out: str | Path, overwrite: bool = False, note: str = "") -> Path:
    """Write ``out``: the world file ``world`` with the decoder of the VAE file ``vae``. Returns ``out``.
    Raises CheckpointError (a bad file), ValueError (another VAE) or FileExistsError."""
    world, vae, out = Path(world), Path(vae), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; give --overwrite to replace it, or another --out")
    meta, tensors = read_checkpoint(world, WORLD_KIND)
    replaced = load_world(world).vae_weights_id()  # the id agents trained in it may carry
    vmeta, vtensors = read_checkpoint(vae, VAE_KIND)
    if vmeta.get("config") != meta["config"]["vae"]:
        raise ValueError(f"{vae} holds a VAE of another architecture ({vmeta.get('config')}) than {world}'s "
                         f"({meta['config']['vae']}); train it with vae.train.init_from={world}")
    own = sorted(k for k in tensors if k.startswith("vae."))
    if sorted(k for k in vtensors if k.startswith("vae.")) != own:
        raise ValueError(f"{vae} and {world} name different VAE tensors; train it with vae.train.init_from={world}")
    changed = [k for k in own if k.startswith(ENCODER)
               and not torch.equal(vtensors[k].to(tensors[k].dtype), tensors[k])]
    if changed:
        raise ValueError(f"{vae} has another encoder than {world} ({len(changed)} tensors differ, e.g. {changed[0]}): "
                         "its latents are not the ones the world's DiT generates. Train the decoder alone: "
                         f"stage=vae vae.train.decoder_only=true vae.train.init_from={world}")
    new = dict(tensors)
    for k in own:
        if k.startswith(DECODER):
            new[k] = vtensors[k].to(tensors[k].dtype)
    if all(torch.equal(new[k], tensors[k]) for k in own if k.startswith(DECODER)):
        raise ValueError(f"{vae}'s decoder is {world}'s already; nothing to change")
    record = {"from": str(vae), "vae_step": vmeta.get("step"), "psnr": vmeta.get("psnr"),
              "moving_psnr": vmeta.get("moving_psnr"), "replaced_vae_id": replaced,
              **({"note": note} if note else {})}
    meta["decoder"] = [*meta.get("decoder", []), record]
    meta[HISTORY] = joined(history_of(meta), history_of(vmeta))
    meta["vae_step"], meta["vae_psnr"] = vmeta.get("step"), vmeta.get("psnr")
    return save_checkpoint(out, WORLD_KIND, {}, meta, new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldsim.new_decoder", description=__doc__.split("\n\n")[0])
    p.add_argument("world", help="the world file to read")
    p.add_argument("vae", help="the VAE file whose decoder it gets (trained with vae.train.decoder_only=true)")
    p.add_argument("--out", required=True, help="the file to write (may equal the input, with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--note", default="", help="why (stored with the change, e.g. the command that measured it)")
    args = p.parse_args(argv)
    try:
        out = new_decoder(args.world, args.vae, args.out, args.overwrite, args.note)
        loaded = load_world(out)  # read back whole, as any user would
    except (CheckpointError, ValueError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{out}: {args.world} with the decoder of {args.vae} (latent id {loaded.latent_id()} unchanged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
