"""The worker's adaptive explicit learner (AdaGrad + session bias, state in the field `a`).

The stream, crash and restore tests in test_worker_stream / test_worker_crash /
test_exactly_once_group / test_system_of_record run it as the default learner and compare `a`
too; here: the settings, the "never initialised" sentinel, a version loaded without `a`, and the
stream snapshot's aux columns.
"""

from __future__ import annotations

import numpy as np
import pytest

from online_als.adaptive import AdaptiveModel, event_seconds, fill_fresh_aux, new_item_aux
from online_als.factors import Factors, ModelArrays
from online_als.model import ModelState
from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, run_worker, store_for, synthetic_events
from tests.test_worker_stream import assert_redis_equals
from worker.config import ConfigError, load_config
from worker.control import lifecycle
from worker.stores.redis.bulk_load import load_version


def test_learner_settings_come_from_the_defaults_and_bad_values_say_how_to_fix_them() -> None:
    from online_als import defaults as D

    m = load_config(environ={}).model
    assert m.learner == D.LEARNER == "adaptive" and m.adaptive
    p = m.adaptive_params()
    assert (p.lr, p.lr_bias, p.acc_init, p.session_seconds) == (
        D.LEARNING_RATE, D.BIAS_LEARNING_RATE, D.ACC_INIT, D.SESSION_SECONDS)
    assert not p.track_mean  # the worker keeps the version's global mean
    assert not load_config(overrides={"model.learner": "sgd"}, environ={}).model.adaptive
    with pytest.raises(ConfigError, match=r"model\.acc_init.*greater than 0.*--set model\.acc_init"):
        load_config(overrides={"model.acc_init": "0"}, environ={})
    with pytest.raises(ConfigError, match=r"model\.learner.*'adaptive' or 'sgd'"):
        load_config(overrides={"model.learner": "adagrad"}, environ={})
    with pytest.raises(ConfigError, match=r"model\.session_seconds must be a finite number.*3600"):
        load_config(overrides={"model.session_seconds": "inf"}, environ={})


def test_only_all_zero_aux_rows_get_fresh_state() -> None:
    p = load_config(overrides={"model.implicit_factor": "true"}, environ={}).model.adaptive_params()
    k = 4
    aux = new_item_aux(["a", "b", "c"], k, 42, p)
    aux[1] = 0.0  # "b" was loaded without `a`
    aux[2, :k] += 1.0  # "c" has learnt: untouched
    before = aux.copy()
    rows = fill_fresh_aux(aux, ["a", "b", "c"], "i", k, 42, p)
    assert rows.tolist() == [1]
    np.testing.assert_array_equal(aux[1], new_item_aux(["b"], k, 42, p)[0])  # same z per id
    np.testing.assert_array_equal(aux[[0, 2]], before[[0, 2]])
    np.testing.assert_array_equal(event_seconds([1.9, -0.5, np.nan]), [1, -1, 0])


def test_a_version_loaded_without_aux_state_learns_like_the_library_from_its_factors(
        stack: StackInfo, isolated: Isolated) -> None:
    """A retrain's or restore's version has f and b but no `a`: the worker gives each entity
    fresh state on first touch, exactly as AdaptiveModel.from_state does for the same arrays."""
    settings = make_settings(stack, isolated, **{"model.rank": 8, "worker.batch_max_events": 300,
                                                  "model.learner": "adaptive"})
    m = settings.model
    rng = np.random.default_rng(4)
    users, items = [f"u{j}" for j in range(0, 200, 2)], [f"i{j}" for j in range(0, 100, 2)]
    user_side = Factors(users, rng.normal(0, 0.1, (len(users), 8)).astype(np.float32),
                        rng.normal(0, 0.1, len(users)).astype(np.float32))
    item_side = Factors(items, rng.normal(0, 0.1, (len(items), 8)).astype(np.float32),
                        rng.normal(0, 0.1, len(items)).astype(np.float32))
    arrays = ModelArrays("explicit", user_side, item_side, 3.3)
    assert arrays.rank == 8 and user_side.aux is None and item_side.aux is None
    store = store_for(settings)
    version = store.allocate_version()
    load_version(store, version, arrays, checkpoints={0: 0}, topic=settings.kafka.topic,
                 source="test")
    lifecycle.switch(store, None, None, version, "test", "test")
    events = synthetic_events(4000, 200, 100, seed=9)  # half the ids known, half new
    produce(settings, events)
    worker = run_worker(settings, idle_exit_s=3)
    assert worker.applied_total == len(events)

    state = ModelState.from_arrays("explicit", users, user_side.vectors, user_side.biases,
                                   items, item_side.vectors, item_side.biases, seed=m.seed,
                                   user_init_scale=m.init_scale, item_init_scale=m.init_scale,
                                   global_mean=3.3)
    model = AdaptiveModel.from_state(state, m.adaptive_params())
    model.learn_batch([str(e["user_id"]) for e in events], [str(e["item_id"]) for e in events],
                      [float(e["rating"]) for e in events],  # type: ignore[arg-type]
                      event_seconds([float(e["ts"]) for e in events]))  # type: ignore[arg-type]
    assert_redis_equals(settings, model)


def test_stream_snapshots_carry_aux_state(stack: StackInfo, isolated: Isolated) -> None:
    from worker.stores.cassandra.store import CassandraStore

    settings = make_settings(stack, isolated, **{"cassandra.enabled": True})
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
        try:
            assert cass.schema_versions() == [1, 2, 3]
            rng = np.random.default_rng(0)
            n_u, n_i, k = 5000, 3, 4  # more users than a block holds
            f_u, f_i = rng.normal(size=(n_u, k)), rng.normal(size=(n_i, k))
            b_u, b_i = rng.normal(size=n_u), rng.normal(size=n_i)
            a_u = rng.normal(size=(n_u, k + 3)).astype(np.float32)
            a_i = rng.normal(size=(n_i, k + 1)).astype(np.float32)
            uids, iids = [f"u{j}" for j in range(n_u)], [f"i{j}" for j in range(n_i)]
            users, items = Factors(uids, f_u, b_u, a_u), Factors(iids, f_i, b_i, a_i)
            cass.archive.write_snapshot(7, {0: 10}, users, items)
            snap = cass.archive.snapshots(7)[0]
            assert (snap.aux_u, snap.aux_i) == (k + 3, k + 1)
            got = cass.archive.read_snapshot(snap, "u")
            assert got.ids == uids and got.aux is not None
            np.testing.assert_array_equal(got.aux, a_u)
            np.testing.assert_array_equal(got.vectors, users.vectors)
            np.testing.assert_array_equal(got.biases, users.biases)
            got_i = cass.archive.read_snapshot(snap, "i")
            assert got_i.ids == iids and got_i.aux is not None
            np.testing.assert_array_equal(got_i.aux, a_i)
            # SGD: none
            cass.archive.write_snapshot(7, {0: 20}, users.with_aux(None), items.with_aux(None))
            snap = cass.archive.snapshots(7)[0]
            assert (snap.seq, snap.aux_u, snap.aux_i) == (2, 0, 0)
            got = cass.archive.read_snapshot(snap, "u")
            assert got.aux is None and got.ids == uids
            np.testing.assert_array_equal(got.vectors, users.vectors)
        finally:
            cass.drop_keyspace()
