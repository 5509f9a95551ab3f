"""Maximum-likelihood training of a :class:`~aspire_jax.flows.flow.Flow`.

Training minimises the mean negative log density of the samples,

    L(theta) = -(1/n) sum_i log q_theta(x_i),

with optax over shuffled mini-batches. Weighted samples (importance
weights ``w_i``) minimise the weighted mean ``-sum_i w_i log q(x_i) / sum_i
w_i`` instead: each mini-batch is drawn with replacement with probabilities
``w_i / sum w``, an unbiased estimate of that loss whose noise does not grow
with the spread of the weights, and the held-out loss is the weighted mean.
The parameter transform is fitted in ``Flow.init`` and held fixed, so the
samples are mapped to the real line once and only the coupling stack is
trained. One epoch is a single jitted function (a ``lax.scan`` over a static
number of batches), compiled once per data shape and optimiser setting and
reused across epochs and across calls.
"""

import dataclasses
import functools
import math
import warnings
from typing import Callable, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from aspire_jax import transforms
from aspire_jax._types import Array, ArrayLike, PRNGKey
from aspire_jax.errors import FlowError, ValidationError
from aspire_jax.flows.flow import (Flow, FlowParams, _check_key, _gaussian_params,
                                   _host_rng, gaussian_of,
                                   _std_normal_log_prob)

__all__ = ["FlowHistory", "fit"]

_STOP_REASONS = ("max_epochs", "early_stopping", "non_finite_loss")


@dataclasses.dataclass(frozen=True, eq=False)
class FlowHistory:
    """Per-epoch losses of a :func:`fit` call.

    Attributes
    ----------
    training_loss
        ``(n_epochs_run,)`` mean mini-batch loss of each epoch (mean negative
        log density in native space).
    validation_loss
        ``(n_epochs_run,)`` loss on the validation set after each epoch; empty
        when no validation set was used.
    best_epoch
        Index of the epoch whose parameters were returned.
    stop_reason
        ``"max_epochs"``, ``"early_stopping"`` or ``"non_finite_loss"``.
    gaussian_validation_loss
        Loss on the validation set of the Gaussian (in the unbounded,
        whitened space of the parameter transform) fitted to the training
        set: the baseline the flow has to beat. NaN without a validation set.
    held_out_index, held_out_log_q
        Rows of the training samples held out for validation, and their
        ``log q`` under the returned parameters (``None`` without a
        validation set). Per-sample data of this fit: not part of
        :meth:`to_dict`, so a history read back from a file has neither.
    seed
        The int seed the fit's key came from (``Aspire.fit`` draws one when
        given ``key=None``), so that the fit can be repeated; ``None`` for a
        typed key.
    """

    training_loss: np.ndarray
    validation_loss: np.ndarray
    best_epoch: int
    stop_reason: str = "max_epochs"
    gaussian_validation_loss: float = math.nan
    held_out_index: np.ndarray | None = None
    held_out_log_q: np.ndarray | None = None
    seed: int | None = None

    @property
    def best_validation_loss(self) -> float:
        """Validation loss of the parameters returned (NaN without validation)."""
        if self.validation_loss.size == 0:
            return math.nan
        return float(self.validation_loss[self.best_epoch])

    def gain_over_gaussian(self) -> float:
        """Held-out log density per sample gained by the flow over the Gaussian.

        ``gaussian_validation_loss - best_validation_loss`` in nats per sample:
        large when the earlier posterior has structure (curvature, skew, several
        modes) that a Gaussian misses, near zero or negative when it is close to
        Gaussian. NaN without a validation set.
        """
        return float(self.gaussian_validation_loss - self.best_validation_loss)

    def plot_loss(self, fig=None):
        """Training and validation loss per epoch
        (:func:`aspire_jax.plotting.plot_flow_loss`)."""
        from ..plotting import plot_flow_loss

        return plot_flow_loss(self, fig=fig)

    def to_dict(self) -> dict:
        """JSON-able dict (losses as lists of floats; ``seed`` only when set)."""
        out = {
            "training_loss": [float(v) for v in self.training_loss],
            "validation_loss": [float(v) for v in self.validation_loss],
            "best_epoch": int(self.best_epoch),
            "stop_reason": self.stop_reason,
            "gaussian_validation_loss": float(self.gaussian_validation_loss),
        }
        if self.seed is not None:
            out["seed"] = int(self.seed)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "FlowHistory":
        """Rebuild from :meth:`to_dict` output (lists or arrays).

        Parameters
        ----------
        data
            Dict with keys ``training_loss``, ``validation_loss``, ``best_epoch``
            and optionally ``stop_reason``.

        Returns
        -------
        FlowHistory

        Raises
        ------
        ValidationError
            If keys are missing or unknown, a loss is not a real number,
            ``best_epoch`` is not an integer inside the epochs run, the loss
            lengths disagree or ``stop_reason`` is unknown.
        """
        keys = {f.name for f in dataclasses.fields(cls)} - {"held_out_index",
                                                            "held_out_log_q"}
        if not isinstance(data, dict) or not set(data) <= keys:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValidationError(
                f"FlowHistory keys must be among {sorted(keys)}; got {got}."
            )
        missing = sorted(keys - {"stop_reason", "gaussian_validation_loss", "seed"}
                         - set(data))
        if missing:
            raise ValidationError(f"FlowHistory dict lacks {missing}.")
        try:
            train = np.asarray(data["training_loss"], dtype=np.float64).reshape(-1)
            val = np.asarray(data["validation_loss"], dtype=np.float64).reshape(-1)
            gauss = np.asarray(data.get("gaussian_validation_loss", math.nan),
                               dtype=np.float64)
            gauss = float(gauss.reshape(()))
        except (TypeError, ValueError) as err:
            raise ValidationError(f"FlowHistory losses must be real numbers: {err}"
                                  ) from err
        best = np.asarray(data["best_epoch"])
        if best.shape != () or best.dtype.kind not in "iu":
            raise ValidationError(
                f"best_epoch must be an integer; got {data['best_epoch']!r}.")
        best = int(best)
        if val.size and val.size != train.size:
            raise ValidationError(
                f"validation_loss has {val.size} epochs, training_loss {train.size}.")
        n_epochs = max(train.size, 1)
        if not 0 <= best < n_epochs:
            raise ValidationError(
                f"best_epoch {best} is outside the {train.size} epochs run.")
        seed = data.get("seed")
        if seed is not None:
            seed = np.asarray(seed)
            if seed.shape != () or seed.dtype.kind not in "iu":
                raise ValidationError(
                    f"FlowHistory seed must be an integer; got {data['seed']!r}.")
            seed = int(seed)
        stop = data.get("stop_reason", "max_epochs")
        if stop not in _STOP_REASONS:
            raise ValidationError(
                f"stop_reason must be one of {_STOP_REASONS}; got {stop!r}.")
        return cls(training_loss=train, validation_loss=val, best_epoch=best,
                   stop_reason=stop, gaussian_validation_loss=gauss, seed=seed)


class _OptimizerSettings(NamedTuple):
    learning_rate: float
    weight_decay: float
    clip_grad: float | None


def _make_optimizer(settings: _OptimizerSettings) -> optax.GradientTransformation:
    opt = optax.adamw(settings.learning_rate, weight_decay=settings.weight_decay)
    if settings.clip_grad is not None:
        opt = optax.chain(optax.clip_by_global_norm(settings.clip_grad), opt)
    return opt


def _sum_log_prob(flow: Flow, net: dict, u: Array, logdet_t: Array,
                  weight: Array) -> tuple[Array, Array]:
    """``sum_i w_i log q(x_i)`` for training rows ``u`` on the real line, and
    the ``log q(x_i)`` of each row."""
    # Unrolled: training takes many small steps, where the scanned stack's
    # per-layer slicing of saved intermediates costs more than it saves in
    # compile time (gauss10, 50 epochs: 3.3 s unrolled against 5.3 s).
    z, logdet_c = flow._net_to_latent(net, u, unroll=True)
    log_q = _std_normal_log_prob(z) + logdet_c + logdet_t
    return jnp.sum(weight * log_q), log_q


@functools.partial(
    jax.jit, static_argnames=("flow", "settings", "n_batches", "batch_size")
)
def _run_epoch(
    net, opt_state, order, u_train, ld_train, u_val, ld_val, w_val, *, flow,
    settings, n_batches, batch_size,
):
    """One pass over shuffled training batches, then the validation loss.

    ``order`` holds the ``n_batches * batch_size`` training rows of the epoch,
    in order. ``w_val`` weighs the validation rows (mean one). The validation
    rows, padded with zero-weight rows to whole batches, are
    scanned through the same body as the training batches with the update
    switched off: the program then holds one copy of the flow and its
    gradient instead of a second copy of the flow for validation alone.
    """
    optimizer = _make_optimizer(settings)
    _, unravel = jax.flatten_util.ravel_pytree(net)
    n_val = u_val.shape[0]
    n_val_batches = -(-n_val // batch_size)
    pad = n_val_batches * batch_size - n_val
    dims = u_train.shape[1:]
    u = jnp.concatenate([u_train[order], u_val, jnp.zeros((pad,) + dims, u_val.dtype)])
    ld = jnp.concatenate([ld_train[order], ld_val, jnp.zeros(pad, ld_val.dtype)])
    weight = jnp.concatenate([jnp.ones(n_batches * batch_size, ld.dtype),
                              w_val.astype(ld.dtype), jnp.zeros(pad, ld.dtype)])
    n_steps = n_batches + n_val_batches
    train = jnp.arange(n_steps) < n_batches

    def body(carry, xs):
        net, opt_state = carry
        u, ld, weight, train = xs
        (total, log_q), grads = jax.value_and_grad(
            functools.partial(_sum_log_prob, flow), has_aux=True)(net, u, ld, weight)

        def update(args):
            net, opt_state = args
            flat, _ = jax.flatten_util.ravel_pytree(net)
            # Adam(W) and global-norm clipping are unchanged by flattening; one
            # vector instead of a tree of arrays keeps the update small.
            flat_grads, _ = jax.flatten_util.ravel_pytree(grads)
            updates, opt_state = optimizer.update(-flat_grads / batch_size,
                                                  opt_state, flat)
            return unravel(optax.apply_updates(flat, updates)), opt_state

        net, opt_state = jax.lax.cond(train, update, lambda args: args,
                                      (net, opt_state))
        return (net, opt_state), (total, log_q)

    def batched(a):
        return a.reshape((n_steps, batch_size) + a.shape[1:])

    (net, opt_state), (totals, log_q) = jax.lax.scan(
        body, (net, opt_state), (batched(u), batched(ld), batched(weight), train))
    train_loss = -jnp.sum(totals[:n_batches]) / (n_batches * batch_size)
    if n_val:
        val_loss = -jnp.sum(totals[n_batches:]) / n_val
    else:
        val_loss = jnp.asarray(jnp.nan, dtype=totals.dtype)
    # The validation rows are scanned after the last update, so their log q
    # is that of the returned parameters.
    val_log_q = log_q[n_batches:].reshape(-1)[:n_val]
    return net, opt_state, train_loss, val_loss, val_log_q


def _gaussian_loss(mean: np.ndarray, chol: np.ndarray, u_val: np.ndarray,
                   ld_val: np.ndarray, w_val: np.ndarray) -> float:
    """Weighted validation loss (float64, on the host: the sets are small) of
    the Gaussian ``N(mean, chol chol^T)`` in the unbounded space; NaN for no
    Gaussian (NaN ``chol``)."""
    if not np.all(np.isfinite(chol)):
        return math.nan
    u_val, ld_val = (np.asarray(a, np.float64) for a in (u_val, ld_val))
    d = mean.shape[0]
    z = np.linalg.solve(chol, (u_val - mean).T).T
    log_n = (-0.5 * np.sum(z**2, axis=1) - 0.5 * d * math.log(2 * math.pi)
             - np.sum(np.log(np.diag(chol))))
    return float(-np.average(log_n + ld_val, weights=w_val))


def _check_positive_int(name: str, value, *, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValidationError(f"{name} must be a positive int; got {value!r}.")


def _check_float(name: str, value, low: float, *, strict: bool, allow_none=False):
    if allow_none and value is None:
        return None
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        op = ">" if strict else ">="
        raise ValidationError(
            f"{name} must be a finite float {op} {low}; got {value!r}."
        )
    return float(value)


def _validate(flow, params, key, x, n_epochs, batch_size, validation_fraction,
              patience, callback) -> np.ndarray:
    if not isinstance(flow, Flow):
        raise ValidationError(f"flow must be a Flow; got {type(flow).__name__}.")
    if not isinstance(params, FlowParams):
        raise ValidationError(
            f"params must be FlowParams; got {type(params).__name__}."
        )
    _check_key(key)
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != flow.n_dims:
        raise ValidationError(
            f"x must have shape (n_samples, {flow.n_dims}); got shape {x.shape}."
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValidationError(f"x must be a real-valued array; got dtype {x.dtype}.")
    # Check in the dtype the flow computes in: rounding can land on a bound.
    x = x.astype(np.asarray(params.transform.lower).dtype)
    if not np.all(np.isfinite(x)):
        i, j = np.argwhere(~np.isfinite(x))[0]
        raise ValidationError(
            f"x must be finite; x[{i}, {j}] = {float(x[i, j])}. Drop or repair it."
        )
    lo = np.asarray(params.transform.lower)
    hi = np.asarray(params.transform.upper)
    outside = ~((x > lo) & (x < hi))
    if outside.any():
        i, j = np.argwhere(outside)[0]
        raise ValidationError(
            f"x[{i}, {j}] = {float(x[i, j]):.9g} is not strictly inside the flow's "
            f"prior bounds ({float(lo[j]):.9g}, {float(hi[j]):.9g}); drop it or "
            "re-initialise the flow with wider bounds."
        )
    _check_positive_int("n_epochs", n_epochs)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("patience", patience, allow_none=True)
    ok = isinstance(validation_fraction, (int, float, np.floating))
    if not (ok and 0.0 <= validation_fraction < 1.0):
        raise ValidationError(
            f"validation_fraction must be in [0, 1); got {validation_fraction!r}."
        )
    if callback is not None and not callable(callback):
        raise ValidationError(f"callback must be callable or None; got {callback!r}.")
    return x


def _n_validation(n: int, validation_fraction: float) -> int:
    n_val = int(round(validation_fraction * n))
    if validation_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_val < 1:
        raise ValidationError(
            f"validation_fraction={validation_fraction} leaves no training samples "
            f"out of {n}; lower it or pass more samples."
        )
    return n_val


def _split_weights(w: np.ndarray | None, split: np.ndarray, n_val: int
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """Weights of the training and held-out rows (the held-out ones rescaled
    to mean one) and the number of training rows an epoch draws: all of them
    unweighted, their effective sample size weighted."""
    n_train = split.size - n_val
    if w is None:
        return np.ones(n_train), np.ones(n_val), n_train
    w_train, w_val = w[split[n_val:]], w[split[:n_val]]
    for name, part in (("training", w_train), ("held-out", w_val)):
        if part.size and not np.any(part > 0):
            raise ValidationError(
                f"the {part.size} {name} rows all have weight 0; pass more weighted "
                "samples or drop those of weight 0.")
    if n_val:
        w_val = w_val / np.mean(w_val)
    ess = np.sum(w_train) ** 2 / np.sum(w_train**2)
    return w_train, w_val, int(min(n_train, max(1, math.floor(ess))))


def _held_out_split(rng: np.random.Generator, x: np.ndarray,
                    n_val: int) -> tuple[np.ndarray, int]:
    """A permutation of the rows of ``x`` whose first rows are held out, and
    how many: ``n_val``, or as near it as whole groups of identical rows
    allow. Copies of a row (a thinned chain's repeated states, say) are kept
    on one side: a copy of a training row among the held-out ones would score
    the flow on what it was fitted to, and make the held-out loss, early
    stopping and the gain over the Gaussian look better than they are."""
    n = x.shape[0]
    _, group, counts = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    if counts.size == n or n_val == 0:
        return rng.permutation(n).astype(np.int32), n_val
    group = group.reshape(-1)
    order = rng.permutation(counts.size)
    held = np.cumsum(counts[order])
    # Whole groups up to the one that brings the count nearest n_val, and at
    # least one group on each side.
    k = int(np.searchsorted(held, n_val))
    if k > 0 and (k == held.size or n_val - held[k - 1] <= held[k] - n_val):
        k -= 1
    k = min(max(k, 0), counts.size - 2) + 1
    rank = np.empty(counts.size, np.int64)
    rank[order] = np.arange(counts.size)
    val = rank[group] < k
    rows = rng.permutation(n)
    split = np.concatenate([rows[val[rows]], rows[~val[rows]]]).astype(np.int32)
    return split, int(val.sum())


@functools.partial(jax.jit, static_argnames=("flow", "n_val", "settings"))
def _prepare(params, order, x, *, flow, n_val, settings):
    """Unbounded training and validation sets (the first ``n_val`` rows of the
    permutation ``order`` are held out) and the optimizer state over the
    flattened network parameters.

    One compiled program, so that the preparation does not compile a dozen
    small eager operations on a first call.
    """
    u, logdet_t = flow.to_unbounded(params, x)
    i_train, i_val = order[n_val:], order[:n_val]
    flat, _ = jax.flatten_util.ravel_pytree(params.net)
    opt_state = _make_optimizer(settings).init(flat)
    return u[i_train], logdet_t[i_train], u[i_val], logdet_t[i_val], opt_state


def fit(
    flow: Flow,
    params: FlowParams,
    key: PRNGKey,
    x: ArrayLike,
    *,
    n_epochs: int = 200,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    validation_fraction: float = 0.2,
    patience: int | None = 20,
    clip_grad: float | None = None,
    weight_decay: float = 0.0,
    callback: Callable[[int, float, float], None] | None = None,
    weights: ArrayLike | None = None,
) -> tuple[FlowParams, FlowHistory]:
    """Train the flow by maximum likelihood on samples ``x``.

    Parameters
    ----------
    flow
        The flow.
    params
        Starting parameters, normally from ``flow.init``; their parameter
        transform is kept as is.
    key
        Typed PRNG key for the validation split and the batch order.
    x
        ``(n_samples, n_dims)`` finite samples inside the prior bounds.
    n_epochs
        Maximum number of passes over the training set.
    learning_rate
        Adam(W) step size, > 0.
    batch_size
        Mini-batch size; capped at the number of training samples.
    validation_fraction
        Fraction in ``[0, 1)`` of samples held out for early stopping.
    patience
        Stop after this many epochs without a new best validation loss;
        ``None`` never stops early.
    clip_grad
        If given, clip gradients to this global norm.
    weight_decay
        Decoupled weight decay (AdamW), >= 0.
    callback
        Called on the host as ``callback(epoch, train_loss, val_loss)`` after
        every epoch (``val_loss`` is NaN without a validation set).
    weights
        ``None`` or ``(n_samples,)`` non-negative importance weights of the
        samples (need not be normalised). The flow then fits the weighted
        distribution: batches are drawn with replacement in proportion to
        the weights, an epoch holds as many rows as the training rows'
        effective sample size ``(sum w)^2 / sum w^2``, and the validation
        loss is the weighted mean over the held-out rows. Pass the same
        weights to ``flow.init`` for a weighted whitening.

    Returns
    -------
    params : FlowParams
        The parameters with the lowest validation loss or, without a
        validation set, those after the last epoch.
    history : FlowHistory
        Losses per epoch and the epoch returned.

    Raises
    ------
    ValidationError
        If an input is malformed or a setting out of range, or the training
        or held-out rows carry no weight.
    FlowError
        If the very first epoch gives a non-finite loss.

    Warns
    -----
    RuntimeWarning
        If a later epoch gives a non-finite loss; training stops there and the
        best parameters so far are returned.

    Notes
    -----
    Each epoch uses ``floor(n_train / batch_size)`` full batches of a fresh
    permutation (weighted: of a fresh weighted draw of effective-sample-size
    rows), so the batch count is static and one compilation serves every
    epoch. The leftover samples differ from epoch to epoch.
    """
    x = _validate(flow, params, key, x, n_epochs, batch_size, validation_fraction,
                  patience, callback)
    settings = _OptimizerSettings(
        learning_rate=_check_float("learning_rate", learning_rate, 0.0, strict=True),
        weight_decay=_check_float("weight_decay", weight_decay, 0.0, strict=False),
        clip_grad=_check_float(
            "clip_grad", clip_grad, 0.0, strict=True, allow_none=True
        ),
    )

    w = transforms._check_weights(weights, x.shape[0])
    n_val = _n_validation(x.shape[0], float(validation_fraction))
    split, n_val = _held_out_split(_host_rng(key, 0), x, n_val)
    u_train, ld_train, u_val, ld_val, opt_state = _prepare(
        params, split, x, flow=flow, n_val=n_val, settings=settings)
    w_train, w_val, n_rows = _split_weights(w, split, n_val)
    p_train = None if w is None else w_train / np.sum(w_train)
    w_val_epoch = jnp.asarray(w_val, ld_val.dtype)  # converted once, not per epoch
    batch = min(int(batch_size), n_rows)
    n_batches = n_rows // batch
    use_val = u_val.shape[0] > 0

    net = params.net
    best_net, best_epoch, best_val, best_log_q = net, 0, math.inf, None
    train_hist, val_hist, stop_reason = [], [], "max_epochs"
    shuffle = _host_rng(key, 1)
    for epoch in range(int(n_epochs)):
        # A fresh permutation each epoch; the n_train mod batch_size samples
        # left over differ from epoch to epoch, so none is dropped for good.
        if w is None:
            order = shuffle.permutation(u_train.shape[0])[: n_batches * batch]
        else:
            order = shuffle.choice(u_train.shape[0], n_batches * batch, p=p_train)
        new_net, opt_state, train_loss, val_loss, val_log_q = _run_epoch(
            net, opt_state, order.astype(np.int32), u_train, ld_train, u_val,
            ld_val, w_val_epoch,
            flow=flow, settings=settings, n_batches=n_batches, batch_size=batch,
        )
        train_loss, val_loss = float(train_loss), float(val_loss)
        monitored = val_loss if use_val else train_loss
        if not math.isfinite(train_loss) or not math.isfinite(monitored):
            if epoch == 0:
                raise FlowError(
                    f"flow training gave a non-finite loss ({train_loss}) in the first "
                    "epoch; lower learning_rate, set clip_grad, or check the samples."
                )
            warnings.warn(
                f"flow training stopped at epoch {epoch}: non-finite loss; returning "
                f"the parameters of epoch {best_epoch}. Lower learning_rate or set "
                "clip_grad.",
                RuntimeWarning,
                stacklevel=2,
            )
            stop_reason = "non_finite_loss"
            break
        net = new_net
        train_hist.append(train_loss)
        if use_val:
            val_hist.append(val_loss)
        if callback is not None:
            callback(epoch, train_loss, val_loss)
        if not use_val:
            best_net, best_epoch = net, epoch
        elif val_loss < best_val:
            best_net, best_epoch, best_val, best_log_q = net, epoch, val_loss, val_log_q
        elif patience is not None and epoch - best_epoch >= patience:
            stop_reason = "early_stopping"
            break

    u_train, u_val, ld_val = jax.device_get((u_train, u_val, ld_val))
    # The Gaussian of the training rows: the baseline of the held-out gain,
    # and the one kept in the parameters (GaussianReference).
    mean, chol = gaussian_of(u_train, w_train)
    gauss = _gaussian_loss(mean, chol, u_val, ld_val, w_val) if use_val else math.nan
    history = FlowHistory(
        training_loss=np.asarray(train_hist, dtype=np.float64),
        validation_loss=np.asarray(val_hist, dtype=np.float64),
        best_epoch=int(best_epoch),
        stop_reason=stop_reason,
        gaussian_validation_loss=gauss,
        held_out_index=split[:n_val] if use_val else None,
        held_out_log_q=(np.asarray(best_log_q, np.float64)
                        if use_val and best_log_q is not None else None),
    )
    dtype = np.asarray(params.transform.lower).dtype
    return params.replace(net=best_net,
                          gaussian=_gaussian_params(mean, chol, dtype)), history
