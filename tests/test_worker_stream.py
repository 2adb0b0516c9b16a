"""The worker on the real stack: N produced -> N applied, Redis equals the in-memory model."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.adaptive import AdaptiveModel, event_seconds, fill_fresh_aux
from online_als.online import OnlineModel
from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, run_worker, store_for, synthetic_events
from worker.config import Settings
from worker.stores.redis.keys import FIELD_AUX
from worker.stores.redis.store import dump_vectors

pytestmark = pytest.mark.stack


def reference_model(settings: Settings, events: list[dict[str, object]]
                    ) -> OnlineModel | AdaptiveModel:
    """The in-memory model fed the same events in the same (single-partition) order."""
    m = settings.model
    users = [str(e["user_id"]) for e in events]
    items = [str(e["item_id"]) for e in events]
    if m.adaptive:  # AdaGrad + session bias: the library's model with the worker's settings
        adaptive = AdaptiveModel(m.rank, m.adaptive_params(), seed=m.seed,
                                 init_scale=m.init_scale, global_mean=m.global_mean)
        adaptive.learn_batch(users, items, [float(e["rating"]) for e in events],  # type: ignore[arg-type]
                             event_seconds([float(e["ts"]) for e in events]))  # type: ignore[arg-type]
        return adaptive
    if m.mode == "explicit":
        model = OnlineModel.explicit(
            k=m.rank, lr=m.learning_rate, reg=m.regularization, reg_bias=m.bias_regularization,
            clip=m.gradient_clip, global_mean=m.global_mean, track_mean=False, seed=m.seed,
            init_scale=m.init_scale)
        values = [float(e["rating"]) for e in events]  # type: ignore[arg-type]
    else:
        u_scale, i_scale = m.init_scales()
        model = OnlineModel.implicit(
            k=m.rank, reg=m.foldin_regularization, alpha=m.alpha, update_items=m.update_items,
            seed=m.seed, user_init_scale=u_scale, item_init_scale=i_scale)
        from online_als.events import ImplicitEventMap

        weights = ImplicitEventMap.from_string(m.event_weights).weights
        values = [float(weights[str(e["event"])]) for e in events]
    model.learn_batch(users, items, values)
    return model


def assert_redis_equals(settings: Settings, model: OnlineModel | AdaptiveModel) -> None:
    """Every vector, bias and (adaptive learner) aux row in Redis equals the model's, bit for
    bit."""
    store = store_for(settings)
    version = store.current_version()
    assert version is not None
    state = model.state
    aux = ((model.user_aux, model.item_aux) if isinstance(model, AdaptiveModel)
           else (None, None))
    for kind, idmap, factors, biases, table in (
        ("u", state.users, state.user_factors, state.user_bias, aux[0]),
        ("i", state.items, state.item_factors, state.item_bias, aux[1]),
    ):
        got_side = dump_vectors(store, version, kind, settings.model.rank)
        ids, f, b = got_side.id_list(), got_side.vectors, got_side.biases
        assert got_side.ids == sorted(idmap.ids)
        rows = idmap.rows_for(ids, add=False)
        np.testing.assert_array_equal(f, factors[rows])
        np.testing.assert_array_equal(b, biases[rows])
        if table is not None:
            got = store.read_vectors(store.vector_keys(version, kind, ids), settings.model.rank,
                                     extra={FIELD_AUX: table.shape[1]}).extra[FIELD_AUX]
            # a key never touched since a load without `a` has none: it means fresh state
            fill_fresh_aux(got, ids, kind, settings.model.rank, settings.model.seed,
                           model.params)
            np.testing.assert_array_equal(got, table[rows])


@pytest.mark.parametrize(("mode", "learner"),
                         [("explicit", "adaptive"), ("explicit", "sgd"), ("implicit", "sgd")])
def test_stream_applies_every_event_like_the_in_memory_model(
        stack: StackInfo, isolated: Isolated, mode: str, learner: str) -> None:
    settings = make_settings(stack, isolated, **{"model.mode": mode, "model.rank": 16,
                                                  "worker.batch_max_events": 257,
                                                  "model.learner": learner})
    events = synthetic_events(3000, 300, 200, seed=1, implicit=mode == "implicit")
    produce(settings, events)
    worker = run_worker(settings, idle_exit_s=3)
    assert worker.applied_total == len(events)
    assert worker.dead_lettered_total == 0
    assert_redis_equals(settings, reference_model(settings, events))
    store = store_for(settings)
    cp = store.read_checkpoints(store.current_version() or 0, settings.kafka.topic, [0])[0]
    assert cp.offset == len(events) and not cp.has_pending
