"""Augmentations for satellite chips: flips, 90-degree rotations, small brightness/contrast.

Overhead imagery has no "up": a flipped or rotated chip shows the same landscape, so these
transforms add training examples without inventing content (unlike crops or colour jitter
that move a pixel out of its band's range). Brightness and contrast changes stay small and
act on normalised bands, imitating illumination and atmosphere between acquisitions.

Every draw comes from the ``torch.Generator`` the caller passes, so a seeded training run
repeats exactly. A unit's dates (a sequence) all get the same geometric transform, so a pixel
stays at the same place across time. Pixel masks follow the geometry, and photometric changes
only touch valid pixels, which therefore stay at zero where there is no data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eocausal.errors import EncoderError

__all__ = ["Augment"]


@dataclass(frozen=True)
class Augment:
    """Random flips, 90-degree rotations and brightness/contrast changes, drawn per chip.

    Parameters
    ----------
    flips : bool, default=True
        Flip left-right and up-down, each with probability 1/2.
    rotations : bool, default=True
        Rotate by k * 90 degrees, k uniform in {0, 1, 2, 3}; non-square chips only by 0 or
        180 degrees, which keeps their shape.
    brightness : float, default=0.1
        Largest additive shift, in units of a band's standard deviation (chips are
        normalised): one shift per chip, uniform in [-brightness, brightness].
    contrast : float, default=0.1
        Largest relative change of contrast: each chip's deviations from its own per-band
        mean are scaled by a factor uniform in [1 - contrast, 1 + contrast].

    Raises
    ------
    EncoderError
        If ``brightness`` or ``contrast`` is negative or ``contrast`` is 1 or more.
    """

    flips: bool = True
    rotations: bool = True
    brightness: float = 0.1
    contrast: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.brightness):
            raise EncoderError(f"brightness must be >= 0. Got {self.brightness!r} instead.")
        if not 0.0 <= float(self.contrast) < 1.0:
            raise EncoderError(f"contrast must be in [0, 1). Got {self.contrast!r} instead.")

    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch; return it and its pixel mask, transformed alike.

        Parameters
        ----------
        x : Tensor of shape (B, C, H, W) or (B, T, C, H, W)
            Normalised chips.
        generator : torch.Generator
            CPU generator all random draws come from.
        valid : Tensor of shape (B, H, W) or (B, T, H, W), bool, optional
            Pixel mask; photometric changes only touch valid pixels.

        Returns
        -------
        x : Tensor, same shape and dtype as the input
        valid : Tensor or None, same shape as the input mask
        """
        if x.ndim not in (4, 5):
            raise EncoderError(
                f"Augment expects chips (B, C, H, W) or (B, T, C, H, W). Got {tuple(x.shape)}."
            )
        n = x.shape[0]
        # Always draw everything, in a fixed order, so switching one transform off does not
        # change the draws of the others.
        flip_lr = torch.rand(n, generator=generator) < 0.5
        flip_ud = torch.rand(n, generator=generator) < 0.5
        turns = torch.randint(0, 4, (n,), generator=generator)
        shift = (torch.rand(n, generator=generator) * 2 - 1) * self.brightness
        scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * self.contrast
        if valid is None:
            mask = torch.ones((*x.shape[:-3], 1, *x.shape[-2:]), dtype=torch.bool,
                              device=x.device)
        else:
            mask = valid.to(torch.bool).unsqueeze(-3)
        if self.flips:
            x, mask = _where_each(flip_lr, x.flip(-1), x), _where_each(flip_lr, mask.flip(-1), mask)
            x, mask = _where_each(flip_ud, x.flip(-2), x), _where_each(flip_ud, mask.flip(-2), mask)
        if self.rotations:
            if x.shape[-1] != x.shape[-2]:
                turns = (turns % 2) * 2
            x, mask = x.clone(), mask.clone()
            for k in (1, 2, 3):
                rows = (turns == k).nonzero().flatten().to(x.device)
                if len(rows):
                    x[rows] = torch.rot90(x[rows], k, dims=(-2, -1))
                    mask[rows] = torch.rot90(mask[rows], k, dims=(-2, -1))
        if self.brightness or self.contrast:
            shape = (n,) + (1,) * (x.ndim - 1)
            weight = mask.to(x.dtype)
            dims = tuple(range(1, x.ndim - 3)) + (-2, -1)
            count = weight.sum(dim=dims, keepdim=True).clamp(min=1)
            centre = (x * weight).sum(dim=dims, keepdim=True) / count
            scale_t = scale.to(x.device, x.dtype).reshape(shape)
            shift_t = shift.to(x.device, x.dtype).reshape(shape)
            changed = (x - centre) * scale_t + centre + shift_t
            x = torch.where(mask, changed, x)
        out_mask = None if valid is None else mask.squeeze(-3).to(valid.dtype)
        return x, out_mask


def _where_each(pick: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` for the chips where ``pick`` (B,) is True, else ``b``."""
    return torch.where(pick.to(a.device).reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
