"""Loss values from mmseg's documented behaviour and PyTorch's cross entropy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses


def test_mmseg_documented_values():
  logits = jnp.array([[100.0, -100.0]])
  label = jnp.array([1])
  assert float(losses.cross_entropy(logits, label)) == pytest.approx(200.0)
  assert float(losses.cross_entropy(logits, label, class_weight=[0.8, 0.2])) == pytest.approx(40.0)


def test_mean_counts_ignored_pixels_unless_avg_non_ignore():
  logits = jnp.array([[100.0, -100.0]] * 4)
  label = jnp.array([1, 255, 255, 255])
  assert float(losses.cross_entropy(logits, label)) == pytest.approx(200.0 / 4)
  assert float(losses.cross_entropy(logits, label, avg_non_ignore=True)) == pytest.approx(200.0)


def test_matches_torch_cross_entropy():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7, 4)).astype(np.float32)  # NCHW
  label = rng.integers(0, 4, size=(2, 5, 7))
  label[0, :2] = 255
  ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits.transpose(0, 3, 1, 2)),
                                          torch.from_numpy(label), ignore_index=255, reduction="none")
  out = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(label))
  assert float(out) == pytest.approx(float(ref.mean()), rel=1e-5)


def test_decode_losses_weight_and_parse_losses_total():
  logits = jnp.zeros((1, 4, 4, 3)).at[..., 0].set(5.0)
  label = jnp.ones((1, 8, 8), jnp.int32)
  decode = losses.decode_losses(logits, label, {"type": "CrossEntropyLoss", "loss_weight": 1.0})
  aux = losses.decode_losses(logits, label, {"type": "CrossEntropyLoss", "loss_weight": 0.4})
  total, logs = losses.parse_losses({**losses.add_prefix(decode, "decode"),
                                     **losses.add_prefix(aux, "aux")})
  per_pixel = -np.log(np.exp(0) / (np.exp(5) + 2))
  assert float(logs["decode.loss_ce"]) == pytest.approx(per_pixel, rel=1e-5)
  assert float(logs["aux.loss_ce"]) == pytest.approx(0.4 * per_pixel, rel=1e-5)
  # mmseg's _parse_losses: the total sums keys containing 'loss', not the accuracies.
  assert float(total) == pytest.approx(1.4 * per_pixel, rel=1e-5) and float(logs["loss"]) == float(total)
  # mmseg's accuracy adds float32's eps to both counts: no pixel right is 100 eps / (64 + eps).
  eps = float(np.finfo(np.float32).eps)
  assert float(logs["decode.acc_seg"]) == pytest.approx(100 * eps / (64 + eps))


def test_terms_sharing_a_loss_name_add_up():
  # mmseg: two loss_decode entries with one loss_name are summed under that name.
  logits = jnp.zeros((1, 4, 4, 3)).at[..., 0].set(5.0)
  label = jnp.ones((1, 4, 4), jnp.int32)
  one = losses.decode_losses(logits, label, {"type": "CrossEntropyLoss"})["loss_ce"]
  two = losses.decode_losses(logits, label, [{"type": "CrossEntropyLoss", "loss_weight": 1.0},
                                             {"type": "CrossEntropyLoss", "loss_weight": 2.0}])
  assert float(two["loss_ce"]) == pytest.approx(3 * float(one), rel=1e-6)


def test_sigmoid_documented_value_and_torch_bce():
  logits = jnp.array([[100.0, -100.0]])
  assert float(losses.cross_entropy(logits, jnp.array([1]), use_sigmoid=True)) == pytest.approx(100.0)
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # NHWC, 5 classes
  y = rng.integers(0, 5, size=(2, 3, 4))
  y[0, 0] = 255
  cw = [0.5, 1.0, 2.0, 1.0, 0.3]
  onehot = np.eye(5)[np.where(y == 255, 0, y)] * (y != 255)[..., None]
  ref = torch.nn.functional.binary_cross_entropy_with_logits(
      torch.from_numpy(x), torch.from_numpy(onehot.astype(np.float32)),
      pos_weight=torch.tensor(cw), reduction="none").numpy() * (y != 255)[..., None]
  out = losses.cross_entropy(jnp.asarray(x), jnp.asarray(y), use_sigmoid=True, class_weight=cw)
  assert float(out) == pytest.approx(ref.mean(), rel=1e-5)


def test_dice_loss_by_hand():
  logits = np.log(np.array([[[[0.7, 0.3], [0.2, 0.8]]]], np.float32))  # N=1, H=1, W=2, C=2
  label = np.array([[[0, 255]]])
  p = np.array([[0.7, 0.3], [0.2, 0.8]])
  t = np.array([[1, 0], [0, 1]])  # mmseg clamps the ignored label 255 to class C-1 = 1 ...
  # ... and masks it in the numerator only.
  m = np.array([[1], [0]])
  per_class = [1 - (2 * (p[:, c] * t[:, c] * m[:, 0]).sum() + 1) / ((p[:, c] ** 2 + t[:, c] ** 2).sum() + 1)
               for c in range(2)]
  out = losses.dice_loss(jnp.asarray(logits), jnp.asarray(label))
  assert float(out) == pytest.approx(sum(per_class) / 2, rel=1e-5)


def test_focal_loss_matches_formula_with_torch_bce():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(2)
  x = rng.normal(size=(6, 4)).astype(np.float32)
  y = np.array([0, 1, 2, 3, 255, 1])
  t = np.eye(4)[np.where(y == 255, 0, y)]
  p = 1 / (1 + np.exp(-x))
  focal = (0.5 * t + 0.5 * (1 - t)) * ((1 - p) * t + p * (1 - t)) ** 2
  bce = torch.nn.functional.binary_cross_entropy_with_logits(
      torch.from_numpy(x), torch.from_numpy(t.astype(np.float32)), reduction="none").numpy()
  ref = (bce * focal * (y != 255)[:, None]).mean()
  assert float(losses.focal_loss(jnp.asarray(x), jnp.asarray(y))) == pytest.approx(ref, rel=1e-5)


def test_ohem_keeps_hard_pixels():
  # True-class probabilities 0.9, 0.6, 0.2, 0.4 (+ one ignored pixel).
  probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.6, 0.4], [0.5, 0.5]])
  labels = np.array([0, 1, 1, 1, 255])
  logits = jnp.asarray(np.log(probs))[None]
  w = losses.ohem_weight(logits, jnp.asarray(labels)[None], thresh=0.5, min_kept=1)
  # kept: below max(0.5, 2nd smallest valid prob 0.4) = 0.5 -> the 0.2 and 0.4 pixels
  np.testing.assert_array_equal(np.asarray(w)[0], [0, 0, 1, 1, 0])
  w = losses.ohem_weight(logits, jnp.asarray(labels)[None], thresh=0.3, min_kept=3)
  # threshold max(0.3, 4th smallest 0.9) = 0.9 -> all valid pixels below 0.9
  np.testing.assert_array_equal(np.asarray(w)[0], [0, 1, 1, 1, 0])


def test_ohem_without_thresh_keeps_the_largest_losses():
  # CE per pixel = -log p_true: 0.105, 0.511, 1.609, 0.916; the ignored pixel never counts.
  probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.6, 0.4], [0.99, 0.01]])
  labels = jnp.asarray(np.array([0, 1, 1, 1, 255]))[None]
  logits = jnp.asarray(np.log(probs))[None]
  w = losses.ohem_weight(logits, labels, min_kept=2)
  np.testing.assert_array_equal(np.asarray(w)[0], [0, 0, 1, 1, 0])
  # class_weight [1, 0.1] makes the label-0 pixel (loss 0.105) outrank the 0.511 * 0.1 pixel
  w = losses.ohem_weight(logits, labels, min_kept=3,
                         loss_terms=[dict(type="CrossEntropyLoss", class_weight=[1.0, 0.1])])
  np.testing.assert_array_equal(np.asarray(w)[0], [1, 0, 1, 1, 0])
  w = losses.ohem_weight(logits, labels, min_kept=10)  # more than valid: all valid pixels
  np.testing.assert_array_equal(np.asarray(w)[0], [1, 1, 1, 1, 0])
  with pytest.raises(ValueError, match="softmax CrossEntropyLoss"):
    losses.ohem_weight(logits, labels, min_kept=2, loss_terms=[dict(type="DiceLoss")])


def test_mask_cross_entropy_matches_torch():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  pred = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)  # N, H, W, C
  target = (rng.random((3, 4, 5)) > 0.5).astype(np.float32)
  label = np.array([2, 0, 5])
  ref = torch.nn.functional.binary_cross_entropy_with_logits(
      torch.from_numpy(pred.transpose(0, 3, 1, 2))[torch.arange(3), torch.from_numpy(label)],
      torch.from_numpy(target), reduction="mean").item()
  got = losses.mask_cross_entropy(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(label))
  assert float(got) == pytest.approx(ref, rel=1e-5)
  with pytest.raises(ValueError, match="use_mask"):
    losses.cross_entropy(jnp.asarray(pred[..., :2]), jnp.zeros((3, 4, 5), jnp.int32), use_mask=True)


def _lovasz_reference(probs, labels, ignore=255):
  """Berman et al.'s Lovasz-softmax over present classes, filtering ignored pixels explicitly."""
  keep = labels != ignore
  probs, labels = probs[keep], labels[keep]
  losses = []
  for c in range(probs.shape[1]):
    fg = (labels == c).astype(np.float64)
    if fg.sum() == 0:
      continue
    errors = np.abs(fg - probs[:, c])
    order = np.argsort(-errors, kind="stable")
    fg_sorted = fg[order]
    inter = fg.sum() - np.cumsum(fg_sorted)
    union = fg.sum() + np.cumsum(1 - fg_sorted)
    jac = 1 - inter / union
    jac[1:] = jac[1:] - jac[:-1]
    losses.append(np.dot(errors[order], jac))
  return np.mean(losses)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_matches_reference(per_image):
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 5, 6))  # class 3 absent
  labels[0, 0, :3] = 255
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  if per_image:
    ref = np.mean([_lovasz_reference(probs[i].reshape(-1, 4), labels[i].reshape(-1)) for i in range(2)])
  else:
    ref = _lovasz_reference(probs.reshape(-1, 4), labels.reshape(-1))
  out = losses.lovasz_loss(jnp.asarray(logits), jnp.asarray(labels), per_image=per_image,
                           reduction="mean" if per_image else "none")
  assert float(out) == pytest.approx(ref, rel=1e-5)


# mmseg 0.30's lovasz_loss.py restated in torch (its per-pixel filtering, sorting and reductions),
# the reference for every LovaszLoss option.
def _torch_lovasz_grad(gt_sorted):
  gts = gt_sorted.sum()
  intersection = gts - gt_sorted.float().cumsum(0)
  union = gts + (1 - gt_sorted).float().cumsum(0)
  jaccard = 1.0 - intersection / union
  if len(gt_sorted) > 1:
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
  return jaccard


def _torch_lovasz_softmax_flat(probs, labels, classes, class_weight):
  import torch
  losses_ = []
  for c in (list(range(probs.size(1))) if classes in ("all", "present") else classes):
    fg = (labels == c).float()
    if classes == "present" and fg.sum() == 0:
      continue
    errors = (fg - probs[:, c]).abs()
    errors_sorted, perm = torch.sort(errors, 0, descending=True)
    loss = torch.dot(errors_sorted, _torch_lovasz_grad(fg[perm]))
    losses_.append(loss * class_weight[c] if class_weight is not None else loss)
  return torch.stack(losses_).mean()


def _torch_lovasz_hinge_flat(logits, labels):
  import torch
  signs = 2.0 * labels.float() - 1.0
  errors_sorted, perm = torch.sort(1.0 - logits * signs, dim=0, descending=True)
  return torch.dot(torch.relu(errors_sorted), _torch_lovasz_grad(labels[perm]))


def _torch_lovasz(logits, labels, loss_type, classes, per_image, reduction, class_weight, ignore=255):
  """mmseg's LovaszLoss.forward on NHWC numpy logits: (B*)H*W pixels, ignored ones removed."""
  import torch
  x, y = torch.from_numpy(logits), torch.from_numpy(labels)
  if loss_type == "multi_class":
    x = torch.softmax(x, -1)

  def flat(xi, yi):
    keep = yi.reshape(-1) != ignore
    if loss_type == "binary":
      return _torch_lovasz_hinge_flat(xi.reshape(-1)[keep], yi.reshape(-1)[keep])
    return _torch_lovasz_softmax_flat(xi.reshape(-1, xi.shape[-1])[keep], yi.reshape(-1)[keep],
                                      classes, class_weight)
  if not per_image:
    return float(flat(x, y))
  per = torch.stack([flat(xi, yi) for xi, yi in zip(x, y)])
  return float(per.sum() if reduction == "sum" else per.mean())  # 'none': _parse_losses' mean


@pytest.mark.parametrize("loss_type,classes,per_image,reduction,class_weight", [
    ("multi_class", [0, 3], False, "none", None),  # class 3 is absent and still counted
    ("multi_class", "present", True, "sum", [0.5, 1.0, 2.0, 4.0]),
    ("multi_class", "all", True, "none", [0.5, 1.0, 2.0, 4.0]),
    ("binary", "present", False, "none", None),
    ("binary", "present", True, "mean", None),
    ("binary", "present", True, "sum", None),
])
def test_lovasz_options_match_mmseg(loss_type, classes, per_image, reduction, class_weight):
  pytest.importorskip("torch")
  rng = np.random.default_rng(5)
  channels = 1 if loss_type == "binary" else 4
  logits = rng.normal(size=(2, 5, 6, channels)).astype(np.float32)
  labels = rng.integers(0, 2 if loss_type == "binary" else 3, size=(2, 5, 6))
  labels[0, 0, :4] = 255
  ref = _torch_lovasz(logits, labels, loss_type, classes, per_image, reduction, class_weight)
  # jitted: one program compiles faster than the eager ops of a vmapped sort
  out = jax.jit(lambda x, y: losses.lovasz_loss(x, y, loss_type=loss_type, classes=classes,
                                                per_image=per_image, reduction=reduction,
                                                class_weight=class_weight))(logits, labels)
  assert float(out) == pytest.approx(ref, rel=1e-5)
  if loss_type == "binary" and per_image and reduction == "mean":  # through a head's loss_decode
    term = dict(type="LovaszLoss", loss_type="binary", per_image=True, loss_weight=0.5)
    got = jax.jit(lambda x, y: losses.decode_losses(x, y, term)["loss_lovasz"])(logits, labels)
    assert float(got) == pytest.approx(0.5 * ref, rel=1e-5)


def test_lovasz_refuses_what_mmseg_refuses():
  logits, labels = jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2), jnp.int32)
  with pytest.raises(ValueError, match="reduction='none'"):  # mmseg asserts this
    losses.lovasz_loss(logits, labels)
  with pytest.raises(ValueError, match="one-channel"):
    losses.lovasz_loss(logits, labels, loss_type="binary", reduction="none")
  with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
    losses.lovasz_loss(logits, labels, classes=[0, 3], reduction="none")
  with pytest.raises(ValueError, match="loss_type"):
    losses.lovasz_loss(logits, labels, loss_type="multiclass", reduction="none")


def _ce_terms(reduction, **kw):
  return dict(type="CrossEntropyLoss", reduction=reduction, **kw)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid", "focal"])
def test_loss_reduction_as_mmseg_weight_reduce_loss(kind):
  # 'sum' sums the (weighted) element losses; 'none' leaves them to _parse_losses, which takes
  # their mean; 'mean' with avg_non_ignore divides by the valid elements only.
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(6)
  logits = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 3, 4))
  labels[0, 0] = 255
  valid = labels != 255
  x = torch.from_numpy(logits.transpose(0, 3, 1, 2))
  if kind == "softmax":
    per = F.cross_entropy(x, torch.from_numpy(labels), ignore_index=255, reduction="none").numpy()
    term, n_valid = dict(type="CrossEntropyLoss"), valid.sum()
  else:
    target = np.eye(3)[np.where(valid, labels, 0)].transpose(0, 3, 1, 2)
    t = torch.from_numpy(target)
    per = F.binary_cross_entropy_with_logits(x.double(), t, reduction="none").numpy()
    if kind == "focal":
      p = torch.sigmoid(x.double()).numpy()
      per = per * (0.5 * target + 0.5 * (1 - target)) * ((1 - p) * target + p * (1 - target)) ** 2
    per = per * valid[:, None]
    term = dict(type="FocalLoss") if kind == "focal" else dict(type="CrossEntropyLoss", use_sigmoid=True)
    n_valid = valid.sum() * 3
  name = "loss_focal" if kind == "focal" else "loss_ce"
  run = lambda **kw: float(losses.decode_losses(jnp.asarray(logits), jnp.asarray(labels),
                                                dict(term, **kw))[name])
  assert run(reduction="sum") == pytest.approx(per.sum(), rel=1e-5)
  assert run(reduction="none") == pytest.approx(per.mean(), rel=1e-5)
  assert run(reduction="mean") == pytest.approx(per.mean(), rel=1e-5)
  if kind != "focal":
    assert run(reduction="mean", avg_non_ignore=True) == pytest.approx(per.sum() / n_valid, rel=1e-5)
    assert run(reduction="none", avg_non_ignore=True) == pytest.approx(per.mean(), rel=1e-5)
    assert run(reduction="sum", avg_non_ignore=True) == pytest.approx(per.sum(), rel=1e-5)
  with pytest.raises(ValueError, match="reduction='avg'"):
    run(reduction="avg")


def test_reduction_where_mmseg_has_none_or_no_effect():
  rng = np.random.default_rng(7)
  logits = jnp.asarray(rng.normal(size=(2, 3, 4, 3)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 3, size=(2, 3, 4)))
  with pytest.raises(ValueError, match="TverskyLoss.*reduction"):  # no such argument in mmseg
    losses.decode_losses(logits, labels, dict(type="TverskyLoss", reduction="sum"))
  # DiceLoss: the inner per-class mean leaves the outer reduction a scalar; an OHEM sampler's
  # weights are not passed on (its forward swallows them).
  dice = lambda **kw: float(losses.decode_losses(logits, labels, dict(type="DiceLoss", **kw))["loss_dice"])
  plain = dice()
  assert dice(reduction="sum") == plain and dice(reduction="none") == plain
  sampled = losses.decode_losses(logits, labels, dict(type="DiceLoss"),
                                 sampler=dict(type="OHEMPixelSampler", thresh=0.5, min_kept=2))
  assert float(sampled["loss_dice"]) == pytest.approx(plain, rel=1e-6)


def test_dice_uses_its_own_ignore_index():
  # mmseg's DiceLoss masks with its ignore_index (default 255), not the head's.
  logits = jnp.log(jnp.array([[[[0.9, 0.1], [0.3, 0.7]]]]))
  labels = jnp.array([[[0, 1]]])
  own = float(losses.decode_losses(logits, labels, dict(type="DiceLoss"), ignore_index=1)["loss_dice"])
  assert own == pytest.approx(float(losses.dice_loss(logits, labels, ignore_index=255)), rel=1e-6)
  assert own != pytest.approx(float(losses.dice_loss(logits, labels, ignore_index=1)), rel=1e-3)


def _torch_accuracy(pred, target, topk=1, thresh=None, ignore_index=None):
  """mmseg 0.30's accuracy() restated (pred (N, C, ...) torch, target (N, ...))."""
  import torch
  ks = (topk,) if isinstance(topk, int) else topk
  pred_value, pred_label = pred.topk(max(ks), dim=1)
  pred_label = pred_label.transpose(0, 1)
  correct = pred_label.eq(target.unsqueeze(0).expand_as(pred_label))
  if thresh is not None:
    correct = correct & (pred_value > thresh).t()
  if ignore_index is not None:
    correct = correct[:, target != ignore_index]
  eps = torch.finfo(torch.float32).eps
  total = (target[target != ignore_index].numel() if ignore_index is not None else target.numel()) + eps
  res = [float((correct[:k].reshape(-1).float().sum() + eps) * (100.0 / total)) for k in ks]
  return res[0] if isinstance(topk, int) else tuple(res)


@pytest.mark.parametrize("topk,thresh,ignore_index", [(1, None, 255), ((1, 2), None, 255),
                                                      ((1, 3), 0.2, None), (2, 0.0, 255)])
def test_accuracy_topk_thresh_match_mmseg(topk, thresh, ignore_index):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(8)
  pred = rng.normal(size=(40, 5)).astype(np.float32)  # mmseg's thresh works on (N, C) scores
  target = rng.integers(0, 5, size=40)
  target[:6] = 255 if ignore_index is not None else target[:6]
  ref = _torch_accuracy(torch.from_numpy(pred), torch.from_numpy(target), topk, thresh, ignore_index)
  out = losses.accuracy(jnp.asarray(pred), jnp.asarray(target), ignore_index, topk=topk, thresh=thresh)
  np.testing.assert_allclose(np.asarray(out, np.float64), np.asarray(ref), rtol=1e-6)
  if thresh is None:  # pixels: (N, H, W, C) against mmseg's (N, C, H, W)
    seg = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 3, 4))
    labels[0, 0] = 255
    ref = _torch_accuracy(torch.from_numpy(seg.transpose(0, 3, 1, 2)), torch.from_numpy(labels), topk,
                          None, 255)
    out = losses.accuracy(jnp.asarray(seg), jnp.asarray(labels), 255, topk=topk)
    np.testing.assert_allclose(np.asarray(out, np.float64), np.asarray(ref), rtol=1e-6)


def test_tversky_with_alpha_beta_half_is_dice_like():
  # alpha = beta = 0.5: 1 - (TP + s) / (TP + (FP + FN) / 2 + s), by hand on one class pair.
  logits = jnp.log(jnp.array([[[[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]]]))
  labels = jnp.array([[[0, 1, 255]]])
  p = np.array([[0.9, 0.1], [0.3, 0.7]])
  t = np.array([[1, 0], [0, 1]])
  tp, fp, fn = (p * t).sum(0), (p * (1 - t)).sum(0), ((1 - p) * t).sum(0)
  ref = np.mean(1 - (tp + 1) / (tp + 0.5 * fp + 0.5 * fn + 1))
  out = losses.tversky_loss(logits, labels, alpha=0.5, beta=0.5)
  assert float(out) == pytest.approx(ref, rel=1e-5)


def test_tversky_gamma_and_per_image_mean():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
  labels = rng.integers(0, 2, size=(2, 3, 3))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  t = np.eye(2)[labels]
  tp, fp, fn = ((probs * t).sum((1, 2)), (probs * (1 - t)).sum((1, 2)), ((1 - probs) * t).sum((1, 2)))
  per = (1 - (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)) ** 2.0  # (N, C)
  out = losses.tversky_loss(jnp.asarray(logits), jnp.asarray(labels), gamma=2.0)
  assert float(out) == pytest.approx(per.mean(0).sum() / 2, rel=1e-5)


def test_decode_losses_with_ohem_by_loss_ranking():
  # mmseg's r101-d16-mg124 heads: sampler=dict(type='OHEMPixelSampler', min_kept=...) (no thresh).
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 4, 4, 3)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 3, (2, 4, 4)))
  out = losses.decode_losses(logits, labels, dict(type="CrossEntropyLoss"),
                             sampler=dict(type="OHEMPixelSampler", min_kept=5))
  ce = np.asarray(losses.softmax_ce_pixels(logits, labels))
  kept = np.sort(ce.reshape(-1))[-10:]  # the 5 x batch largest
  assert float(out["loss_ce"]) == pytest.approx(kept.sum() / ce.size, rel=1e-5)


@pytest.mark.parametrize("block_bytes", [1 << 30, 4000, 1])
@pytest.mark.parametrize("align_corners", [False, True])
def test_cross_entropy_in_row_blocks_equals_the_whole_resized_logits(block_bytes, align_corners, monkeypatch):
  """decode_losses with softmax CE terms makes the full-size logits a block of rows at a time
  (one block; blocks whose rows do not divide 29, padded; one row each): loss, accuracy and the
  gradient equal those of the whole resized logits (mmseg: F.interpolate, then the loss)."""
  monkeypatch.setattr(losses, "CE_BLOCK_BYTES", block_bytes)
  rng = np.random.default_rng(0)
  seg_logit = jnp.asarray(rng.normal(size=(2, 8, 9, 5)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, size=(2, 29, 33)))
  labels = labels.at[:, :3].set(255)
  terms = [dict(type="CrossEntropyLoss", loss_weight=0.7, class_weight=[1.0, 2.0, 0.5, 1.0, 3.0]),
           dict(type="CrossEntropyLoss", avg_non_ignore=True, loss_name="loss_b")]

  def blocked(x):
    out = losses.decode_losses(x, labels, terms, align_corners=align_corners)
    return out["loss_ce"] + out["loss_b"], out

  def whole(x):
    from segjax import layers
    logits = layers.resize(x, labels.shape[1:3], align_corners)
    out = {"loss_ce": 0.7 * losses.cross_entropy(logits, labels, class_weight=[1.0, 2.0, 0.5, 1.0, 3.0]),
           "loss_b": losses.cross_entropy(logits, labels, avg_non_ignore=True),
           "acc_seg": losses.accuracy(logits, labels)}
    return out["loss_ce"] + out["loss_b"], out

  (_, got), grad = jax.value_and_grad(blocked, has_aux=True)(seg_logit)
  (_, want), want_grad = jax.value_and_grad(whole, has_aux=True)(seg_logit)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)
