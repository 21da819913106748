"""Training-time image augmentation on the device: random shifts and horizontal flips."""

from __future__ import annotations


def augment(x, shift: int = 0, flip: bool = False):
    """Random translation by up to `shift` pixels (border repeated) and horizontal flips.

    Args:
        x: a batch of images (B, C, H, W); other shapes are returned unchanged.
    """
    import torch
    import torch.nn.functional as F

    if x.dim() != 4 or not (shift or flip):
        return x
    b, _, h, w = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")  # (B, C, H+2s, W+2s)
        dy, dx = torch.randint(0, 2 * shift + 1, (2, b, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
        x = padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    if flip:
        mask = torch.rand(b, device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x.contiguous()
