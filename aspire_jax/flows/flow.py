"""The normalizing flow: configuration, parameters and pure density methods.

The flow maps a native point ``x`` to a standard-normal latent ``z`` in two
steps,

    x --(parameter transform T)--> u --(coupling stack C)--> z,

where ``T`` (bounded maps plus whitening, :mod:`aspire_jax.transforms`) is
fitted once on the training samples and kept fixed, and ``C`` is the trained
chain of coupling layers. The density in native space is

    log q(x) = log N(z; 0, I) + log|det dz/du| + log|det du/dx|.
"""

import dataclasses
import functools
import math
import warnings

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from aspire_jax import transforms
from aspire_jax._random import compact_draws
from aspire_jax._types import Array, ArrayLike, PRNGKey, is_int
from aspire_jax.errors import FlowError, ValidationError
from aspire_jax.flows.bijectors import COUPLING_KINDS, CouplingStack, stack_layer_params

__all__ = ["FlowConfig", "FlowParams", "Flow"]

_FORMAT = "aspire_jax.flow_params"
# 3: adds the Gaussian fitted in the unbounded space (FlowParams.gaussian).
# 2: conditioner parameters stacked over layers (one scanned layer body).
# 1: one conditioner per layer, sized to that layer's columns.
# 1 and 2 are read by converting to 3, with no Gaussian (NaN).
_FORMAT_VERSION = 3


def _host_rng(key: PRNGKey, *streams: int) -> np.random.Generator:
    """A numpy generator seeded by the bits of ``key`` and optional stream
    numbers, for draws made on the host (no random-bit programs to compile)."""
    seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel()
    return np.random.default_rng([*seed.tolist(), *streams])


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Static, hashable description of a flow architecture.

    Parameters
    ----------
    n_dims
        Number of parameters.
    kind
        Coupling type: ``"spline"`` (rational-quadratic) or ``"affine"``.
    n_layers
        Number of coupling layers.
    hidden_sizes
        Hidden-layer widths of every conditioner MLP.
    n_bins
        Bins per spline (ignored by ``"affine"``).
    spline_range
        Half-width ``B``: splines act on ``[-B, B]`` and are linear outside.
    bounded_transform
        ``"logit"`` or ``"probit"`` for parameters with two finite bounds.
    affine
        Whether the parameter transform whitens the training samples.
    eps
        Boundary clamp of the parameter transform, in ``[0, 0.5)``.

    Raises
    ------
    ValidationError
        If a field has the wrong type or is out of range.
    """

    n_dims: int
    kind: str = "spline"
    n_layers: int = 4
    hidden_sizes: tuple[int, ...] = (64, 64)
    n_bins: int = 8
    spline_range: float = 5.0
    bounded_transform: str = "logit"
    affine: bool = True
    eps: float = 1e-6

    def __post_init__(self):
        for name, low in (("n_dims", 1), ("n_layers", 1), ("n_bins", 2)):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise ValidationError(f"{name} must be an int >= {low}; got {value!r}.")
            object.__setattr__(self, name, int(value))
        if self.kind not in COUPLING_KINDS:
            raise ValidationError(
                f"kind must be one of {COUPLING_KINDS}; got {self.kind!r}."
            )
        sizes = self.hidden_sizes
        if not isinstance(sizes, (tuple, list)) or not all(
            is_int(w) and w >= 1 for w in sizes
        ):
            raise ValidationError(
                f"hidden_sizes must be a tuple of positive ints; got {sizes!r}."
            )
        object.__setattr__(self, "hidden_sizes", tuple(int(w) for w in sizes))
        r = self.spline_range
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (
            0 < r < math.inf
        ):
            raise ValidationError(
                f"spline_range must be a finite float > 0; got {r!r}."
            )
        object.__setattr__(self, "spline_range", float(r))
        if not isinstance(self.affine, (bool, np.bool_)):
            raise ValidationError(f"affine must be True or False; got {self.affine!r}.")
        object.__setattr__(self, "affine", bool(self.affine))
        transforms._check_settings(self.bounded_transform, self.eps)
        object.__setattr__(self, "eps", float(self.eps))

    def to_dict(self) -> dict:
        """JSON-able dict of the fields (``hidden_sizes`` as a list)."""
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "FlowConfig":
        """Rebuild a config from :meth:`to_dict` output.

        Parameters
        ----------
        data
            Dict of fields; omitted fields take their defaults.

        Returns
        -------
        FlowConfig

        Raises
        ------
        ValidationError
            If ``data`` has unknown keys, lacks ``n_dims`` or holds bad values.
        """
        if not isinstance(data, dict):
            raise ValidationError(f"expected a dict; got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                f"unknown FlowConfig keys {unknown}; known keys are {sorted(known)}."
            )
        if "n_dims" not in data:
            raise ValidationError("FlowConfig needs 'n_dims'.")
        data = dict(data)
        if isinstance(data.get("hidden_sizes"), list):
            data["hidden_sizes"] = tuple(data["hidden_sizes"])
        return cls(**data)


@struct.dataclass
class FlowParams:
    """Parameters of a :class:`Flow`.

    Attributes
    ----------
    transform
        Fitted parameter transform (held fixed during training).
    net
        flax variables dict of the coupling stack.
    gaussian
        ``{"mean": (n_dims,), "chol": (n_dims, n_dims)}``: the Gaussian
        ``N(mean, chol chol^T)`` of the training samples in the unbounded
        space of the transform, the alternative reference of
        :class:`~aspire_jax.flows.GaussianReference`. :meth:`Flow.init` fits
        it to every sample; :func:`~aspire_jax.flows.fit` refits it to the
        training rows alone, so that it is the baseline its held-out gain is
        measured against. NaN when there is none (parameters written
        before format 3); ``None`` (the default, for parameters built by
        hand) is saved as NaN.
    """

    transform: transforms.TransformParams
    net: dict
    gaussian: dict | None = None


def _check_key(key) -> None:
    typed = isinstance(key, jax.Array) and jax.dtypes.issubdtype(
        key.dtype, jax.dtypes.prng_key
    )
    if not typed:
        got = getattr(key, "dtype", type(key).__name__)
        shape = getattr(key, "shape", "")
        raise ValidationError(
            f"key must be a typed PRNG key from jax.random.key(seed); got "
            f"{got}{shape}. Wrap a legacy uint32 key with jax.random.wrap_key_data."
        )


def _std_normal_log_prob(z: Array) -> Array:
    d = z.shape[-1]
    return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * d * math.log(2.0 * math.pi)


def gaussian_of(u: np.ndarray, weights: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted maximum-likelihood Gaussian of the rows of ``u`` (float64, on
    the host): its mean and the Cholesky factor of its covariance, with a
    jitter of ``1e-6`` of the mean variance on the diagonal; both NaN when
    the covariance is not positive definite (one row, or rows flat in some
    direction)."""
    u = np.asarray(u, np.float64)
    n, d = u.shape
    p = np.full(n, 1.0 / n) if weights is None else weights / np.sum(weights)
    mean = p @ u
    c = u - mean
    cov = (c * p[:, None]).T @ c
    cov = cov + 1e-6 * np.trace(cov) / d * np.eye(d)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return np.full(d, np.nan), np.full((d, d), np.nan)
    if not (np.all(np.isfinite(chol)) and np.all(np.diag(chol) > 0)):
        return np.full(d, np.nan), np.full((d, d), np.nan)
    return mean, chol


def _warn_outside_splines(u: np.ndarray, spline_range: float) -> None:
    """Warn when, without the whitening, many training points lie where the
    splines are the identity: the flow cannot move or scale them there."""
    outside = np.mean(np.abs(u) > spline_range, axis=0)
    if np.max(outside) > 0.05:
        j = int(np.argmax(outside))
        warnings.warn(
            f"affine=False: {outside[j]:.0%} of the training points of column {j} "
            f"lie outside the splines' range [-{spline_range:g}, {spline_range:g}] "
            "(on the real line, unwhitened), where every coupling layer passes them "
            "through unchanged, so the flow cannot fit them. Keep the whitening "
            "(affine=True, affine_transform=True in Aspire) or widen spline_range",
            UserWarning, stacklevel=3)


def _gaussian_params(mean: np.ndarray, chol: np.ndarray, dtype) -> dict:
    return {"mean": jnp.asarray(mean, dtype), "chol": jnp.asarray(chol, dtype)}


def _inside_bounds(params: "FlowParams", x: Array) -> Array:
    """Whether each row of ``x`` lies strictly inside the transform's bounds
    (NaN coordinates count as outside)."""
    t = params.transform
    return jnp.all((x > t.lower) & (x < t.upper), axis=-1)


@dataclasses.dataclass(frozen=True)
class Flow:
    """A normalizing flow from native parameter space to a standard normal.

    The object only holds its :class:`FlowConfig`, so it is hashable and safe
    to close over (or mark static) in ``jax.jit``. All parameters travel in an
    explicit :class:`FlowParams` pytree; every method is pure and accepts
    points of shape ``(..., n_dims)``, with ``(n, n_dims)`` the usual case.
    The density and map methods are compiled with ``jax.jit`` (the flow being
    a static argument), so eager calls are fast and calls inside the user's
    own ``jit``, ``vmap`` or ``grad`` simply inline them.

    Parameters
    ----------
    config
        Architecture and transform settings.

    Examples
    --------
    >>> import jax, numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 2))
    >>> flow = Flow(FlowConfig(n_dims=2, n_layers=2, hidden_sizes=(8,)))
    >>> params = flow.init(jax.random.key(0), x)
    >>> flow.log_prob(params, x[:3]).shape
    (3,)
    """

    config: FlowConfig

    def __post_init__(self):
        if not isinstance(self.config, FlowConfig):
            raise ValidationError(
                f"config must be a FlowConfig; got {type(self.config).__name__}."
            )

    @property
    def n_dims(self) -> int:
        """Number of parameters."""
        return self.config.n_dims

    @property
    def _net(self) -> CouplingStack:
        c = self.config
        return CouplingStack(
            n_dims=c.n_dims,
            kind=c.kind,
            n_layers=c.n_layers,
            hidden_sizes=c.hidden_sizes,
            n_bins=c.n_bins,
            spline_range=c.spline_range,
        )

    def _net_shapes(self, dtype) -> dict:
        """Shapes and dtypes of the coupling stack's variables (traced, not run)."""
        return jax.eval_shape(
            lambda k: self._net.init(k, jnp.zeros((1, self.n_dims), dtype=dtype),
                                     method=CouplingStack.init_conditioners),
            jax.random.key(0))

    def _init_net(self, key: PRNGKey, dtype=jnp.float32) -> dict:
        """Initial variables, drawn on the host from a generator seeded by ``key``.

        Hidden ``Dense`` kernels get LeCun-normal weights (a normal truncated
        at two standard deviations, rescaled to variance ``1 / fan_in``, as
        flax's default); biases and every conditioner's last layer are zero,
        so each coupling layer starts as the identity. Drawing with numpy
        instead of ``flax.linen.Module.init`` avoids compiling one random-bit
        program per weight matrix, most of a first call's init time.
        """
        rng = _host_rng(key)
        n_hidden = len(self.config.hidden_sizes)
        # Standard deviation of a unit normal truncated to [-2, 2].
        truncated_sd = 0.87962566103423978

        def draw(path, shape):
            layer, name = path[-2].key, path[-1].key
            if name != "kernel" or int(layer.rsplit("_", 1)[1]) >= n_hidden:
                return np.zeros(shape.shape, shape.dtype)
            z = rng.standard_normal(shape.shape)
            while np.any(bad := np.abs(z) > 2.0):
                z[bad] = rng.standard_normal(int(bad.sum()))
            # Kernels are stacked over layers: (n_layers, fan_in, fan_out).
            scale = 1.0 / math.sqrt(shape.shape[-2]) / truncated_sd
            return (scale * z).astype(shape.dtype)

        net = jax.tree_util.tree_map_with_path(draw, self._net_shapes(dtype))
        return jax.tree.map(jnp.asarray, net)

    def init(
        self, key: PRNGKey, x_train: ArrayLike, *, prior_bounds: ArrayLike | None = None,
        weights: ArrayLike | None = None,
    ) -> FlowParams:
        """Fit the parameter transform on ``x_train`` and initialise the net.

        Parameters
        ----------
        key
            Typed PRNG key for the network weights.
        x_train
            ``(n_samples, n_dims)`` finite training samples in native space.
        prior_bounds
            ``None`` or ``(n_dims, 2)`` bounds, ``-inf`` / ``inf`` for open sides.
        weights
            ``None`` or ``(n_samples,)`` non-negative weights of the samples,
            for a weighted whitening (see :func:`fit` for weighted training).

        Returns
        -------
        FlowParams
            Parameters of a flow whose coupling layers start as the identity,
            so the initial density is a product of whitened marginals pulled
            back through the parameter transform.

        Raises
        ------
        ValidationError
            If the key is not typed, ``x_train`` has the wrong width, is not
            finite or leaves ``prior_bounds``, or ``weights`` are malformed.
        """
        _check_key(key)
        x = np.asarray(x_train)
        if x.ndim != 2 or x.shape[1] != self.n_dims:
            raise ValidationError(
                f"x_train must have shape (n_samples, {self.n_dims}); got {x.shape}."
            )
        c = self.config
        transform = transforms.fit_transform(
            x,
            prior_bounds=prior_bounds,
            bounded_transform=c.bounded_transform,
            affine=c.affine,
            eps=c.eps,
            weights=weights,
        )
        dtype = np.dtype(transform.lower.dtype)
        net = self._init_net(key, dtype)
        # The bounded map fit_transform has just compiled for these shapes,
        # then the whitening on the host: no program of its own to compile.
        y, _ = jax.jit(transforms._to_real_line)(transform, jnp.asarray(x, dtype))
        u = ((np.asarray(y, np.float64) - np.asarray(transform.shift, np.float64))
             / np.asarray(transform.scale, np.float64))
        w = None if weights is None else transforms._check_weights(weights, x.shape[0])
        if c.kind == "spline" and not c.affine:
            _warn_outside_splines(u, c.spline_range)
        gaussian = _gaussian_params(*gaussian_of(u, w), dtype)
        return FlowParams(transform=transform, net=net, gaussian=gaussian)

    def _check_points(self, x: ArrayLike, name: str) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.n_dims:
            raise ValidationError(
                f"{name} must have shape (..., {self.n_dims}); got shape {x.shape}."
            )
        return x

    def _net_to_latent(self, net: dict, u: Array,
                       unroll: bool = False) -> tuple[Array, Array]:
        """Coupling stack on ``(m, n_dims)``: u -> z and ``log|det dz/du|``.

        ``unroll`` as in :meth:`CouplingStack.forward_and_log_det` (training
        uses it).
        """
        return self._net.apply(net, u, unroll, method=CouplingStack.forward_and_log_det)

    def _net_from_latent(self, net: dict, z: Array) -> tuple[Array, Array]:
        return self._net.apply(net, z, method=CouplingStack.inverse_and_log_det)

    def _batched(self, fn, x: Array) -> tuple[Array, Array]:
        batch = x.shape[:-1]
        y, logdet = fn(x.reshape(-1, self.n_dims))
        return y.reshape(batch + (self.n_dims,)), logdet.reshape(batch)

    @functools.partial(jax.jit, static_argnums=0)
    def to_unbounded(self, params: FlowParams, x: ArrayLike) -> tuple[Array, Array]:
        """Parameter transform alone: native ``x`` -> real-line ``u``.

        Parameters
        ----------
        params
            Flow parameters.
        x
            ``(..., n_dims)`` native points.

        Returns
        -------
        u : jax.Array
            ``(..., n_dims)`` unbounded, whitened points.
        logdet : jax.Array
            ``(...)`` ``log|det du/dx|``.
        """
        return transforms.forward(params.transform, self._check_points(x, "x"))

    @functools.partial(jax.jit, static_argnums=0)
    def from_unbounded(self, params: FlowParams, u: ArrayLike) -> tuple[Array, Array]:
        """Inverse parameter transform: real-line ``u`` -> native ``x``.

        Parameters
        ----------
        params
            Flow parameters.
        u
            ``(..., n_dims)`` unbounded points.

        Returns
        -------
        x : jax.Array
            ``(..., n_dims)`` native points inside the prior bounds.
        logdet : jax.Array
            ``(...)`` ``log|det dx/du|``.
        """
        return transforms.inverse(params.transform, self._check_points(u, "u"))

    @functools.partial(jax.jit, static_argnums=0)
    def to_latent(self, params: FlowParams, x: ArrayLike) -> tuple[Array, Array]:
        """Whole map: native ``x`` -> standard-normal latent ``z``.

        Parameters
        ----------
        params
            Flow parameters.
        x
            ``(..., n_dims)`` native points.

        Returns
        -------
        z : jax.Array
            ``(..., n_dims)`` latent points.
        logdet : jax.Array
            ``(...)`` ``log|det dz/dx|``.
        """
        u, ld_t = self.to_unbounded(params, x)
        z, ld_c = self._batched(lambda v: self._net_to_latent(params.net, v), u)
        return z, ld_t + ld_c

    @functools.partial(jax.jit, static_argnums=0)
    def from_latent(self, params: FlowParams, z: ArrayLike) -> tuple[Array, Array]:
        """Whole map: latent ``z`` -> native ``x``.

        Parameters
        ----------
        params
            Flow parameters.
        z
            ``(..., n_dims)`` latent points.

        Returns
        -------
        x : jax.Array
            ``(..., n_dims)`` native points.
        logdet : jax.Array
            ``(...)`` ``log|det dx/dz|``.
        """
        z = self._check_points(z, "z")
        u, ld_c = self._batched(lambda v: self._net_from_latent(params.net, v), z)
        x, ld_t = self.from_unbounded(params, u)
        return x, ld_t + ld_c

    @functools.partial(jax.jit, static_argnums=0)
    def log_prob(self, params: FlowParams, x: ArrayLike) -> Array:
        """Log density of the flow in native space.

        Parameters
        ----------
        params
            Flow parameters.
        x
            ``(..., n_dims)`` native points.

        Returns
        -------
        jax.Array
            ``(...)`` ``log q(x)``; ``-inf`` where ``x`` is not strictly inside
            the prior bounds (NaN coordinates count as outside).

        Notes
        -----
        Points closer than ``eps * (hi - lo)`` to a finite bound of a bounded
        parameter are clamped by the parameter transform, so there the value is
        finite but is not the exact density of the samples the flow draws.
        With the default ``eps = 1e-6`` and the logit map (which clamps
        13.8 units out on the real line) this matters only for samples piled
        against a bound. The probit map clamps 4.75 units out, within reach
        of the flow's tails: a flow of a von Mises across the seam of
        (0, 2 pi) drew 1e-3 of its samples in the clamped band (100 times the
        true mass there), where ``log_prob`` differed from their sampling
        density by up to 10 nats. Prefer the logit map, or a smaller ``eps``,
        for the probit.
        """
        x = self._check_points(x, "x")
        z, logdet = self.to_latent(params, x)
        return jnp.where(_inside_bounds(params, x), _std_normal_log_prob(z) + logdet,
                         -jnp.inf)

    def latent_log_prob(
        self, params: FlowParams, z: Array, x: Array, log_det: Array
    ) -> Array:
        """``log q(x)`` for ``x, log_det = from_latent(params, z)``, without a pass.

        Parameters
        ----------
        params
            Flow parameters.
        z
            ``(..., n_dims)`` latent points.
        x, log_det
            Their images and ``log|det dx/dz|``, as returned by :meth:`from_latent`.

        Returns
        -------
        jax.Array
            ``log N(z; 0, I) - log_det``, ``-inf`` where ``x`` is not strictly
            inside the bounds: :meth:`log_prob` at ``x`` up to round-off.
        """
        return jnp.where(_inside_bounds(params, x), _std_normal_log_prob(z) - log_det,
                         -jnp.inf)

    def sample_and_log_prob(
        self, params: FlowParams, key: PRNGKey, n: int
    ) -> tuple[Array, Array]:
        """Draw ``n`` samples and their log densities.

        Parameters
        ----------
        params
            Flow parameters.
        key
            Typed PRNG key.
        n
            Number of samples (a Python int; static under ``jit``).

        Returns
        -------
        x : jax.Array
            ``(n, n_dims)`` samples in native space.
        log_q : jax.Array
            ``(n,)`` ``log q(x)``, computed along the sampling path.
        """
        _check_key(key)
        if not is_int(n) or n < 1:
            raise ValidationError(f"n must be a positive int; got {n!r}.")
        return self._sample_and_log_prob(params, key, int(n))

    @functools.partial(jax.jit, static_argnums=(0, 3))
    @compact_draws
    def _sample_and_log_prob(self, params: FlowParams, key: PRNGKey, n: int):
        dtype = params.transform.lower.dtype
        z = jax.random.normal(key, (n, self.n_dims), dtype=dtype)
        x, logdet = self.from_latent(params, z)
        return x, _std_normal_log_prob(z) - logdet

    def sample(self, params: FlowParams, key: PRNGKey, n: int) -> Array:
        """Draw ``n`` samples, shape ``(n, n_dims)``; see :meth:`sample_and_log_prob`.

        Parameters
        ----------
        params
            Flow parameters.
        key
            Typed PRNG key.
        n
            Number of samples.

        Returns
        -------
        jax.Array
            ``(n, n_dims)`` samples in native space.
        """
        return self.sample_and_log_prob(params, key, n)[0]

    def params_to_bytes(self, params: FlowParams) -> bytes:
        """Serialise parameters to msgpack bytes (no pickle).

        Parameters
        ----------
        params
            Flow parameters of this architecture.

        Returns
        -------
        bytes
            The architecture, the transform's static settings and every array.
        """
        t = transforms.transform_config(params.transform)
        if params.gaussian is None:
            params = params.replace(gaussian=self._no_gaussian(
                np.asarray(params.transform.lower).dtype))
        payload = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": self.config.to_dict(),
            "transform": {
                "kinds": t["kinds"],
                "bounded_transform": t["bounded_transform"],
                "eps": t["eps"],
                "dtype": str(np.asarray(params.transform.lower).dtype),
            },
            "state": flax.serialization.to_state_dict(jax.device_get(params)),
        }
        return flax.serialization.msgpack_serialize(payload)

    def params_from_bytes(self, data: bytes) -> FlowParams:
        """Restore parameters written by :meth:`params_to_bytes`.

        Parameters
        ----------
        data
            Bytes from :meth:`params_to_bytes`.

        Returns
        -------
        FlowParams
            Arrays bit-identical to those serialised.

        Raises
        ------
        FlowError
            If the bytes are not flow parameters, were written by a different
            architecture, or an array's path, shape or dtype differs from the
            template built from this flow's config.
        """
        try:
            payload = flax.serialization.msgpack_restore(bytes(data))
        except Exception as err:  # msgpack raises several unrelated types
            raise FlowError(f"could not decode flow parameters: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise FlowError("bytes are not aspire_jax flow parameters.")
        version = payload.get("version")
        if version not in (1, 2, _FORMAT_VERSION):
            raise FlowError(
                f"flow parameter format version {version!r} is not supported "
                f"(this aspire_jax reads 1 to {_FORMAT_VERSION})."
            )
        _check_same_config(payload.get("config"), self.config)
        template = self._template(payload.get("transform"))
        state = payload.get("state")
        if version == 1:
            state = self._upgrade_v1(state)
        if version in (1, 2) and isinstance(state, dict):
            # Written before the Gaussian was kept: there is none.
            state = {**state, "gaussian": flax.serialization.to_state_dict(
                template.gaussian)}
        _check_tree(flax.serialization.to_state_dict(template), state, "params")
        restored = flax.serialization.from_state_dict(template, state)
        return jax.tree.map(jnp.asarray, restored)

    def _upgrade_v1(self, state):
        """Format-1 state dict -> format 2: stack the per-layer conditioners."""
        c = self.config
        try:
            layers = state["net"]["params"]
            per_layer = [layers[f"conditioners_{i}"] for i in range(c.n_layers)]
            if len(layers) != c.n_layers:
                raise KeyError(f"{len(layers)} conditioners")
            stacked = stack_layer_params(per_layer, c.n_dims, c.n_layers)
        except (TypeError, KeyError, ValueError, IndexError, AttributeError) as err:
            raise FlowError(
                f"format-1 flow parameters do not match the architecture: {err!r}"
            ) from err
        return {**state, "net": {"params": {"conditioners": stacked}}}

    def _template(self, static: dict) -> FlowParams:
        try:
            kinds = tuple(static["kinds"])
            name, eps = static["bounded_transform"], static["eps"]
            dtype = np.dtype(static["dtype"])
        except (TypeError, KeyError) as err:
            raise FlowError(f"flow parameters lack transform settings: {err}") from err
        if len(kinds) != self.n_dims or any(k not in transforms.KINDS for k in kinds):
            raise FlowError(
                f"stored transform kinds {kinds} do not fit a {self.n_dims}-dim flow."
            )
        vec = np.zeros(self.n_dims, dtype=dtype)
        transform = transforms.TransformParams(
            lower=vec, upper=vec, shift=vec, scale=vec,
            kinds=kinds, bounded_transform=name, eps=eps,
        )
        net_shapes = self._net_shapes(dtype)
        # The template is only compared and filled in, so numpy zeros suffice.
        net = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), net_shapes)
        return FlowParams(transform=transform, net=net,
                          gaussian=self._no_gaussian(dtype))

    def _no_gaussian(self, dtype) -> dict:
        d = self.n_dims
        return {"mean": np.full(d, np.nan, dtype), "chol": np.full((d, d), np.nan, dtype)}


def _check_same_config(stored, config: FlowConfig) -> None:
    mine = config.to_dict()
    if not isinstance(stored, dict):
        raise FlowError("flow parameters lack their architecture config.")
    diffs = [
        f"{k}: stored {stored.get(k)!r}, this flow {mine.get(k)!r}"
        for k in sorted(set(stored) | set(mine))
        if stored.get(k) != mine.get(k)
    ]
    if diffs:
        raise FlowError(
            "flow parameters were written by a different architecture ("
            + "; ".join(diffs)
            + "). Build the Flow from the stored config."
        )


def _check_tree(template, state, path: str) -> None:
    if isinstance(template, dict):
        if not isinstance(state, dict):
            raise FlowError(
                f"{path}: expected a mapping, found {type(state).__name__}."
            )
        missing = sorted(set(template) - set(state))
        extra = sorted(set(state) - set(template))
        if missing or extra:
            raise FlowError(f"{path}: missing keys {missing}, unexpected keys {extra}.")
        for k in template:
            _check_tree(template[k], state[k], f"{path}/{k}")
        return
    t = np.asarray(template)
    if not isinstance(state, np.ndarray) or state.shape != t.shape:
        got = getattr(state, "shape", type(state).__name__)
        raise FlowError(f"{path}: expected an array of shape {t.shape}, found {got}.")
    if state.dtype != t.dtype:
        raise FlowError(f"{path}: expected dtype {t.dtype}, found {state.dtype}.")
