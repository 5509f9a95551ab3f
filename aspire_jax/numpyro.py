"""Use a NumPyro model as the new analysis: batched log-prior and log-likelihood.

:func:`from_numpyro` traces the model once to find its latent sample sites,
flattens them into named scalar parameters (``theta[0]``, ``theta[1]``, ...)
and returns batched ``(n, d) -> (n,)`` functions in the *constrained* space of
the latent sites, i.e. the space the model's distributions are written in:

    log_prior(x)      = sum over latent sites (and non-likelihood observed
                        sites) of log p(site | parents)
    log_likelihood(x) = sum over the likelihood's observed sites of
                        log p(y | parents)

so that ``log_prior + log_likelihood`` is NumPyro's log joint density
(``numpyro.infer.util.log_density``) and the evidence of the SMC run is the
model's marginal likelihood. Bounds of interval and half-line supports are
returned as ``prior_bounds`` so :class:`~aspire_jax.aspire.Aspire` maps them
to the real line for the flow.

NumPyro is an optional extra: ``pip install "aspire-jax[numpyro]"``.
"""

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aspire_jax.errors import ValidationError
from aspire_jax.formats import flat_parameter_names

__all__ = ["from_numpyro", "NumPyroSpec", "unflatten_sites"]


class NumPyroSpec(dict):
    """The :class:`~aspire_jax.aspire.Aspire` arguments of a NumPyro model.

    A dict with the keys ``log_prior``, ``log_likelihood``, ``dims``,
    ``parameters``, ``prior_bounds`` and ``periodic_parameters``, so
    ``Aspire(**spec)`` works, plus the attribute :attr:`site_shapes`.

    Attributes
    ----------
    site_shapes : dict[str, tuple]
        Latent site name to the shape of one draw, in column order.
    """

    def __init__(self, *args, site_shapes=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.site_shapes = dict(site_shapes or {})

    def to_sites(self, x: jax.typing.ArrayLike) -> dict:
        """Per-site arrays of points ``x``; see :func:`unflatten_sites`.

        Parameters
        ----------
        x : jax.typing.ArrayLike
            Shape ``(n, dims)`` or ``(dims,)``.

        Returns
        -------
        dict[str, jax.Array]
        """
        return unflatten_sites(x, self.site_shapes)


def _import_numpyro():
    try:
        import numpyro
        from numpyro import handlers
        from numpyro.distributions import constraints
    except ImportError as exc:
        raise ImportError(
            'from_numpyro needs numpyro: pip install "aspire-jax[numpyro]"'
        ) from exc
    return numpyro, handlers, constraints


def _trace(model, args, kwargs, params=None, seed=0):
    _, handlers, _ = _import_numpyro()
    if params is not None:
        model = handlers.substitute(model, data=params)
    model = handlers.seed(model, rng_seed=seed)
    return handlers.trace(model).get_trace(*args, **kwargs)


def _site_log_prob(site) -> jax.Array:
    """Summed log density of one sample site, with its plate scale."""
    value = site["value"]
    if site["intermediates"]:
        log_prob = site["fn"].log_prob(value, site["intermediates"])
    else:
        log_prob = site["fn"].log_prob(value)
    scale = site["scale"]
    if scale is not None:
        log_prob = scale * log_prob
    return jnp.sum(log_prob)


def _box(constraint, constraints) -> tuple | None:
    """Elementwise (low, high) of a box-shaped support, or None."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    if isinstance(constraint, type(constraints.real)):
        return -np.inf, np.inf
    if isinstance(constraint, constraints.interval):
        return constraint.lower_bound, constraint.upper_bound
    if isinstance(constraint, constraints.greater_than):
        return constraint.lower_bound, np.inf
    if isinstance(constraint, constraints.less_than):
        return -np.inf, constraint.upper_bound
    return None


def _site_bounds(name, site, constraints) -> tuple[np.ndarray, np.ndarray, bool]:
    support = site["fn"].support
    if support.is_discrete:
        raise NotImplementedError(
            f"latent site {name!r} is discrete ({type(site['fn']).__name__}); SMC "
            "here moves continuous parameters only: marginalise it out (e.g. with "
            "numpyro.contrib.funsor enumeration) or make it observed")
    box = _box(support, constraints)
    if box is None:
        raise NotImplementedError(
            f"latent site {name!r} has support {support}, which is not a box "
            "(real line, half-line or interval); reparameterise it with "
            "unconstrained or interval-valued sites")
    shape = np.shape(site["value"])
    try:
        low = np.broadcast_to(np.asarray(box[0], float), shape)
        high = np.broadcast_to(np.asarray(box[1], float), shape)
    except jax.errors.TracerArrayConversionError as exc:
        raise ValidationError(
            f"the support bounds of site {name!r} are traced values; call "
            "from_numpyro outside jit") from exc
    circular = isinstance(support, type(constraints.circular))
    return low.ravel(), high.ravel(), circular


def _latent_sites(trace, observed_sites):
    latent, observed = {}, []
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            observed.append(name)
        elif not site.get("infer", {}).get("is_auxiliary", False):
            latent[name] = site
    if observed_sites is None:
        likelihood = tuple(observed)
    else:
        if isinstance(observed_sites, str):
            observed_sites = [observed_sites]
        likelihood = tuple(observed_sites)
        unknown = [s for s in likelihood if s not in observed]
        if unknown:
            raise ValidationError(
                f"observed_sites {unknown} are not observed sample sites of the "
                f"model; its observed sites are {observed}")
    masked = [n for n in latent if n.endswith("_unobserved")
              and n[: -len("_unobserved")] + "_observed" in observed]
    if masked:
        raise ValidationError(
            f"sites {masked} come from obs_mask: numpyro adds one latent value per "
            "element, observed ones included, and masks out their density, so "
            "those entries would be parameters without a proper density. Sample "
            "the missing elements as a site of their own instead")
    if not latent:
        raise ValidationError("the model has no latent sample sites to sample")
    return latent, likelihood


def unflatten_sites(x: jax.typing.ArrayLike, shapes: Mapping[str, tuple]) -> dict:
    """Split points into per-site arrays.

    Parameters
    ----------
    x : jax.typing.ArrayLike
        Points, shape ``(n, d)`` or ``(d,)``, columns in the order of
        ``shapes``.
    shapes : Mapping[str, tuple]
        Site name to the shape of one draw, in column order (as in
        :attr:`NumPyroSpec.site_shapes`).

    Returns
    -------
    dict[str, jax.Array]
        ``name -> (n, *shape)`` (or ``shape`` for a single point).
    """
    x = jnp.asarray(x)
    batch = x.shape[:-1]
    out, start = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=int))
        out[name] = x[..., start:start + size].reshape(batch + tuple(shape))
        start += size
    if start != x.shape[-1]:
        raise ValidationError(
            f"x has {x.shape[-1]} columns but the sites hold {start} values")
    return out


def _make_densities(model, args, kwargs, shapes, likelihood, low, high):
    """Per-point log-prior and log-likelihood, vmapped over the rows of x."""
    low = jnp.asarray(low)
    high = jnp.asarray(high)

    def split(x):
        trace = _trace(model, args, kwargs, unflatten_sites(x, shapes))
        lp = jnp.zeros((), x.dtype)
        ll = jnp.zeros((), x.dtype)
        for name, site in trace.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"] and name in likelihood:
                ll = ll + _site_log_prob(site)
            else:
                lp = lp + _site_log_prob(site)
        return lp, ll

    def one_prior(x):
        lp, _ = split(x)
        # NumPyro does not check supports by default, so a point outside the
        # box would get a finite but meaningless density.
        inside = jnp.all((x >= low) & (x <= high))
        return jnp.where(inside & ~jnp.isnan(lp), lp, -jnp.inf).astype(x.dtype)

    def one_likelihood(x):
        _, ll = split(x)
        return jnp.where(jnp.isnan(ll), -jnp.inf, ll).astype(x.dtype)

    def batched(fn, label):
        # Jitted so that eager calls do not replay the model op by op; inside
        # the caller's own jit this is inlined.
        vectorised = jax.jit(jax.vmap(fn))

        def wrapped(x):
            x = jnp.asarray(x)
            if x.ndim != 2 or x.shape[1] != low.shape[0]:
                raise ValidationError(
                    f"{label} takes points of shape (n, {low.shape[0]}); got "
                    f"{tuple(x.shape)}")
            return vectorised(x)

        wrapped.__name__ = wrapped.__qualname__ = label
        return wrapped

    return batched(one_prior, "log_prior"), batched(one_likelihood, "log_likelihood")


def from_numpyro(
    model: Callable,
    *model_args,
    observed_sites: Sequence[str] | None = None,
    **model_kwargs,
) -> NumPyroSpec:
    """Batched log-prior and log-likelihood of a NumPyro model.

    Parameters
    ----------
    model : Callable
        A NumPyro model; its observed sites must have data (``obs=``).
    *model_args
        Positional arguments of the model (e.g. the data).
    observed_sites : Sequence[str] or None
        Observed sites that make up the likelihood; default: every observed
        site (``numpyro.factor`` terms included). Other observed sites count
        as prior terms.
    **model_kwargs
        Keyword arguments of the model.

    Returns
    -------
    NumPyroSpec
        A dict of :class:`~aspire_jax.aspire.Aspire` arguments, so
        ``Aspire(**spec)`` works: ``log_prior`` and ``log_likelihood``,
        batched ``(n, dims) -> (n,)`` JAX functions of the constrained latent
        values; ``dims``; ``parameters``, the flattened names (``mu``,
        ``theta[0]``, ...); ``prior_bounds``, ``{name: (low, high)}`` from
        each site's support (``±inf`` for open sides); and
        ``periodic_parameters``, the circular sites (``VonMises``), periodic
        on ``(-pi, pi)``. ``spec.site_shapes`` maps each latent site to the
        shape of one draw and ``spec.to_sites(x)`` splits points into sites.

    Raises
    ------
    NotImplementedError
        If a latent site is discrete or its support is not a box (simplex,
        ordered vector, correlation matrix, ...), or the support bounds
        depend on other latent values.
    ValidationError
        If ``observed_sites`` names a site that is not observed, or the model
        has no latent sites.

    Notes
    -----
    The densities are those of the model's own distributions, without the
    Jacobians NumPyro's samplers add in their unconstrained space. Outside
    the support box, ``log_prior`` is ``-inf``. The model is traced again on
    every call (inside ``jit`` that happens once per compilation).

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> spec = from_numpyro(model, jnp.array([0.5, 1.0]))
    >>> spec["parameters"], spec["dims"]
    (['mu'], 1)
    >>> spec["log_prior"](jnp.zeros((3, 1))).shape
    (3,)
    """
    _, _, constraints = _import_numpyro()
    if not callable(model):
        raise ValidationError(f"model must be a callable; got {type(model).__name__}")
    trace = _trace(model, model_args, model_kwargs)
    latent, likelihood = _latent_sites(trace, observed_sites)
    names, shapes, lows, highs, periodic = [], {}, [], [], []
    for name, site in latent.items():
        shape = tuple(np.shape(site["value"]))
        low, high, circular = _site_bounds(name, site, constraints)
        flat = flat_parameter_names(name, shape)
        names += flat
        shapes[name] = shape
        lows.append(low)
        highs.append(high)
        if circular:
            periodic += flat
    _check_fixed_bounds(model, model_args, model_kwargs, latent, shapes, constraints)
    if len(set(names)) != len(names):
        raise ValidationError(f"flattened parameter names collide: {names}")
    low = np.concatenate(lows)
    high = np.concatenate(highs)
    log_prior, log_likelihood = _make_densities(
        model, model_args, model_kwargs, shapes, likelihood, low, high)
    bounds = {n: (float(a), float(b)) for n, a, b in zip(names, low, high)}
    return NumPyroSpec(log_prior=log_prior, log_likelihood=log_likelihood,
                       dims=len(names), parameters=names, prior_bounds=bounds,
                       periodic_parameters=periodic, site_shapes=shapes)


def _check_fixed_bounds(model, args, kwargs, latent, shapes, constraints):
    """Refuse supports whose bounds move with other latent values."""
    first = {n: _site_bounds(n, s, constraints)[:2] for n, s in latent.items()}
    trace = _trace(model, args, kwargs, seed=1)
    for name, site in trace.items():
        if name not in latent:
            continue
        low, high, _ = _site_bounds(name, site, constraints)
        if not (np.array_equal(low, first[name][0])
                and np.array_equal(high, first[name][1])):
            raise NotImplementedError(
                f"the support of site {name!r} depends on other latent values "
                f"(bounds {first[name]} in one draw, {(low, high)} in another); "
                "reparameterise it on a fixed support, e.g. x = low + (high - low) "
                "* u with u ~ Uniform(0, 1)")
