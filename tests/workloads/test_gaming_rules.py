"""Breakout's rules, the input mixer, the wire protocol and the settings: pure, fast tests."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.gaming import breakout as bo
from workloads.gaming.games import get_game
from workloads.gaming.inputs import InputMixer, Inputs
from workloads.gaming.protocol import (
    KEYFRAME,
    ClientStats,
    KeyframeRequest,
    KeyInput,
    Ping,
    PointerInput,
    ProtocolError,
    Receipt,
    choose_codec,
    pack_frame,
    parse_client_message,
    unpack_frame,
)
from workloads.gaming.settings import Settings, SettingsError, parse_resolution

DT = 1 / 60


def playing(x: float, y: float, vx: float, vy: float, **kw: object) -> bo.State:
    state = bo.new_game()
    state.phase = "play"
    state.ball_x, state.ball_y, state.ball_vx, state.ball_vy = x, y, vx, vy
    for key, value in kw.items():
        setattr(state, key, value)
    return state


# -- rules ------------------------------------------------------------------------------------------
def test_ball_rides_the_paddle_until_fire_launches_it_upwards() -> None:
    state = bo.new_game()
    for _ in range(10):
        state = bo.step(state, Inputs(right=True), DT)
    assert state.phase == "serve"
    assert state.ball_x == pytest.approx(state.paddle_x + bo.PADDLE_W / 2)
    state = bo.step(state, Inputs(fire=True), DT)
    assert state.phase == "play"
    assert state.ball_vy < 0
    assert math.hypot(state.ball_vx, state.ball_vy) == pytest.approx(bo.BALL_SPEED)


def test_keys_move_the_paddle_and_walls_stop_it() -> None:
    state = bo.new_game()
    x0 = state.paddle_x
    state = bo.step(state, Inputs(left=True), DT)
    assert state.paddle_x == pytest.approx(x0 - bo.PADDLE_SPEED * DT)
    for _ in range(200):
        state = bo.step(state, Inputs(left=True), DT)
    assert state.paddle_x == 0.0
    for _ in range(200):
        state = bo.step(state, Inputs(right=True), DT)
    assert state.paddle_x == bo.WORLD_W - bo.PADDLE_W


def test_pointer_centres_the_paddle_under_it() -> None:
    state = bo.step(bo.new_game(), Inputs(pointer_x=0.25), DT)
    assert state.paddle_x + bo.PADDLE_W / 2 == pytest.approx(0.25 * bo.WORLD_W)


def test_side_and_top_walls_reflect_the_ball() -> None:
    state = bo.step(playing(bo.BALL_R + 1, 400, -300, 10), Inputs(), DT)
    assert state.ball_vx > 0
    state = bo.step(
        playing(600, bo.HUD_H + bo.BALL_R + 1, 10, -300, bricks=[[False] * bo.COLS] * bo.ROWS), Inputs(), DT
    )
    assert state.ball_vy > 0


def test_paddle_reflects_and_its_edge_sends_the_ball_off_at_an_angle() -> None:
    centre = bo.new_game().paddle_x + bo.PADDLE_W / 2
    state = bo.step(playing(centre, bo.PADDLE_Y - bo.BALL_R - 2, 0, 400), Inputs(), DT)
    assert state.ball_vy < 0 and abs(state.ball_vx) < 1e-6
    right_edge = bo.new_game().paddle_x + bo.PADDLE_W - 2
    state = bo.step(playing(right_edge, bo.PADDLE_Y - bo.BALL_R - 2, 0, 400), Inputs(), DT)
    assert state.ball_vy < 0 and state.ball_vx > 0
    assert math.degrees(math.atan2(state.ball_vx, -state.ball_vy)) > 40


def test_hitting_a_brick_breaks_it_scores_its_row_and_bounces() -> None:
    x0, y0, x1, y1 = bo.brick_rect(5, 3)  # bottom row: 1 point
    state = playing((x0 + x1) / 2, y1 + bo.BALL_R + 2, 0, -400)
    for _ in range(3):
        state = bo.step(state, Inputs(), DT)
    assert state.bricks[5][3] is False
    assert state.score == bo.ROW_POINTS[5]
    assert state.bricks_left == bo.ROWS * bo.COLS - 1
    assert state.ball_vy > 0


def test_a_fast_ball_does_not_tunnel_through_a_brick() -> None:
    x0, y0, x1, y1 = bo.brick_rect(5, 6)
    state = playing((x0 + x1) / 2, y1 + bo.BALL_R + 1, 0, -3000)  # 50 units a step
    state = bo.step(state, Inputs(), DT)
    assert state.bricks[5][6] is False
    assert state.ball_vy > 0


def test_missing_the_ball_costs_a_life_and_the_last_one_ends_the_game() -> None:
    state = playing(100, bo.WORLD_H - 2, 0, 600, paddle_x=900.0)
    for _ in range(5):
        state = bo.step(state, Inputs(), DT)
    assert (state.lives, state.phase) == (bo.START_LIVES - 1, "serve")
    state = playing(100, bo.WORLD_H - 2, 0, 600, paddle_x=900.0, lives=1, score=42)
    for _ in range(5):
        state = bo.step(state, Inputs(), DT)
    assert (state.lives, state.phase) == (0, "over")
    state = bo.step(state, Inputs(left=True), DT)
    assert state.phase == "over" and state.score == 42  # only fire restarts
    state = bo.step(state, Inputs(fire=True), DT)
    assert (state.phase, state.score, state.lives, state.bricks_left) == ("serve", 0, bo.START_LIVES, bo.ROWS * bo.COLS)


def test_clearing_the_wall_starts_a_faster_level() -> None:
    state = playing(0, 0, 0, 0)
    state.bricks = [[False] * bo.COLS for _ in range(bo.ROWS)]
    state.bricks[5][0] = True
    x0, _, x1, y1 = bo.brick_rect(5, 0)
    state.ball_x, state.ball_y, state.ball_vy = (x0 + x1) / 2, y1 + bo.BALL_R + 2, -400
    for _ in range(3):
        state = bo.step(state, Inputs(), DT)
    assert (state.level, state.phase, state.bricks_left) == (2, "serve", bo.ROWS * bo.COLS)
    state = bo.step(state, Inputs(fire=True), DT)
    assert math.hypot(state.ball_vx, state.ball_vy) == pytest.approx(bo.BALL_SPEED * bo.LEVEL_SPEEDUP)


inputs_strategy = st.builds(
    Inputs, left=st.booleans(), right=st.booleans(), pointer_x=st.none() | st.floats(0, 1), fire=st.booleans()
)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), script=st.lists(inputs_strategy, min_size=1, max_size=400))
def test_same_seed_and_inputs_give_the_same_game_and_the_ball_stays_in_the_world(
    seed: int, script: list[Inputs]
) -> None:
    a, b = bo.new_game(seed), bo.new_game(seed)
    for inputs in script:
        a, b = bo.step(a, inputs, DT), bo.step(b, inputs, DT)
        assert bo.snapshot(a) == bo.snapshot(b)
        assert 0 <= a.paddle_x <= bo.WORLD_W - bo.PADDLE_W
        assert bo.BALL_R <= a.ball_x <= bo.WORLD_W - bo.BALL_R
        assert a.ball_y >= bo.HUD_H + bo.BALL_R - 1e-9
        if a.level == 1 and a.seed == seed:  # same game, same wall: score = broken bricks
            assert a.score == sum(
                bo.ROW_POINTS[r] for r in range(bo.ROWS) for c in range(bo.COLS) if not a.bricks[r][c]
            )


# -- inputs -----------------------------------------------------------------------------------------
def test_mixer_holds_keys_across_ticks_and_acks_per_client() -> None:
    mixer = InputMixer()
    mixer.push("a", KeyInput(id=1, key="left", down=True))
    mixer.push("b", KeyInput(id=7, key="fire", down=True))
    first = mixer.take()
    assert (first.left, first.right, first.fire) == (True, False, True)
    assert mixer.acks == {"a": 1, "b": 7}
    second = mixer.take()
    assert second.left and not second.fire  # held, but fire is a press, not a state
    mixer.push("a", KeyInput(id=2, key="left", down=False))
    assert not mixer.take().left
    assert mixer.acks["a"] == 2 and mixer.applied == 3


def test_a_tap_within_one_tick_still_moves_and_a_leaving_client_releases_its_keys() -> None:
    mixer = InputMixer()
    mixer.push("a", KeyInput(id=1, key="right", down=True))
    mixer.push("a", KeyInput(id=2, key="right", down=False))
    assert mixer.take().right
    assert not mixer.take().right
    mixer.push("b", KeyInput(id=1, key="left", down=True))
    assert mixer.take().left
    mixer.forget("b")
    assert not mixer.take().left and "b" not in mixer.acks


def test_pointer_input_sets_the_position_and_fires_on_click() -> None:
    mixer = InputMixer()
    mixer.push("a", PointerInput(id=1, x=0.2, fire=False))
    mixer.push("a", PointerInput(id=2, x=0.7, fire=True))
    inputs = mixer.take()
    assert (inputs.pointer_x, inputs.fire) == (0.7, True)
    assert mixer.take().pointer_x is None


# -- protocol ---------------------------------------------------------------------------------------
def test_frame_header_round_trips() -> None:
    message = pack_frame(frame_id=12, ack=5, tick=99, encode_us=1500, payload=b"\xff\xd8jpeg")
    fields, payload = unpack_frame(message)
    assert fields == {"version": 1, "flags": 0, "frame_id": 12, "ack": 5, "tick": 99, "encode_us": 1500}
    assert payload == b"\xff\xd8jpeg"
    keyframe, _ = unpack_frame(pack_frame(13, 5, 100, 900, b"\x00\x00\x00\x01", keyframe=True))
    assert keyframe["flags"] == KEYFRAME == 1


def test_the_codec_is_the_first_the_page_offers_that_the_session_streams() -> None:
    assert choose_codec("h264,jpeg", ("h264", "jpeg")) == "h264"
    assert choose_codec("av1, H264 ,jpeg", ("jpeg", "h264")) == "h264"  # the page's order, any case
    assert choose_codec("h264", ("jpeg",)) is None
    assert choose_codec(None, ("h264", "jpeg")) == "jpeg"  # a page from before codecs: JPEG
    assert choose_codec("", ("h264",)) is None
    assert choose_codec(",".join(["x"] * 50 + ["h264"]), ("h264",)) is None  # only the first 8 count


def test_client_messages_parse() -> None:
    assert parse_client_message('{"t":"key","id":3,"ts":1.5,"key":"left","down":true}') == KeyInput(
        id=3, key="left", down=True
    )
    assert parse_client_message('{"t":"pointer","id":4,"x":0.5}') == PointerInput(id=4, x=0.5, fire=False)
    stats = parse_client_message(
        json.dumps({"t": "stats", "fps": 59, "frame_ms": [16.6], "latency_ms": [12, 20.5], "skipped": 1})
    )
    assert stats == ClientStats(fps=59.0, frame_ms=(16.6,), latency_ms=(12.0, 20.5), skipped=1)
    assert stats.rtt_ms == ()  # a client older than pings sends no rtt_ms, and is still valid
    with_rtt = parse_client_message(json.dumps({"t": "stats", "fps": 60, "rtt_ms": [0.4, 27]}))
    assert isinstance(with_rtt, ClientStats) and with_rtt.rtt_ms == (0.4, 27.0)
    assert parse_client_message('{"t":"got","id":42}') == Receipt(id=42)
    assert parse_client_message('{"t":"keyframe","why":"decoder error"}') == KeyframeRequest(why="decoder error")
    assert parse_client_message('{"t":"keyframe"}') == KeyframeRequest(why="")


def test_a_ping_parses_and_its_pong_echoes_ts_and_id() -> None:
    ping = parse_client_message('{"t":"ping","id":3,"ts":1234.567}')
    assert ping == Ping(ts=1234.567, id=3)
    assert ping.pong() == {"t": "pong", "ts": 1234.567, "id": 3}
    bare = parse_client_message('{"t":"ping","ts":0}')
    assert bare == Ping(ts=0.0) and bare.pong() == {"t": "pong", "ts": 0.0}
    # the echo survives JSON exactly, so the client's ts comes back the very same number
    ts = 98765.43210987654
    assert json.loads(json.dumps(parse_client_message(json.dumps({"t": "ping", "ts": ts})).pong()))["ts"] == ts


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "JSON"),
        ('{"t":"key","id":1,"key":"jump","down":true}', "key:"),
        ('{"t":"key","id":0,"key":"left","down":true}', "id:"),
        ('{"t":"key","id":1,"key":"left","down":"yes"}', "down:"),
        ('{"t":"pointer","id":1,"x":1.5}', "x:"),
        ('{"t":"stats","fps":60,"latency_ms":[-1]}', "latency_ms:"),
        ('{"t":"stats","fps":60,"rtt_ms":[-1]}', "rtt_ms:"),
        ('{"t":"stats","fps":60,"rtt_ms":[1e9]}', "rtt_ms:"),
        ('{"t":"stats","fps":60,"rtt_ms":["27"]}', "rtt_ms:"),
        ('{"t":"stats","fps":60,"rtt_ms":27}', "rtt_ms:"),
        ('{"t":"ping"}', "ts:"),
        ('{"t":"ping","ts":"now"}', "ts:"),
        ('{"t":"ping","ts":true}', "ts:"),
        ('{"t":"ping","ts":NaN}', "ts:"),
        ('{"t":"ping","ts":Infinity}', "ts:"),
        ('{"t":"ping","ts":1,"id":0}', "id:"),
        ('{"t":"got"}', "id:"),
        ('{"t":"got","id":-3}', "id:"),
        ('{"t":"keyframe","why":7}', "why:"),
        ('{"t":"keyframe","why":"' + "x" * 201 + '"}', "why:"),
        ('{"t":"warp"}', "t:"),
    ],
)
def test_bad_client_messages_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ProtocolError, match=field):
        parse_client_message(text)


# -- settings ---------------------------------------------------------------------------------------
def test_settings_defaults_and_contract_variables() -> None:
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env(
        {
            "PORT": "9000",
            "RUNNER_GAME": "Breakout",
            "RUNNER_FPS": "30",
            "RUNNER_RESOLUTION": "640x360",
            "RUNNER_IDLE_TIMEOUT_S": "12.5",
            "RUNNER_MAX_DURATION_S": "0",
            "RUNNER_LATENCY_BUDGET_MS": "40",
        }
    )
    assert (s.port, s.game, s.fps, s.width, s.height) == (9000, "breakout", 30, 640, 360)
    assert (s.idle_timeout_s, s.max_duration_s, s.latency_budget_ms) == (12.5, 0.0, 40.0)
    assert s.codecs == ("h264", "jpeg") and s.kbps() == (345.6, 691.2)  # 0.1 bit/pixel/frame, half to start
    own = Settings.from_env({"GAMING_CODECS": "JPEG", "GAMING_MAX_KBPS": "3000", "GAMING_START_KBPS": "5000"})
    assert own.codecs == ("jpeg",) and own.kbps() == (3000.0, 3000.0)  # the start never above the ceiling


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"RUNNER_FPS": "fast"}, "RUNNER_FPS"),
        ({"RUNNER_FPS": "0"}, "RUNNER_FPS"),
        ({"PORT": "70000"}, "PORT"),
        ({"RUNNER_RESOLUTION": "1280*720"}, "RUNNER_RESOLUTION"),
        ({"RUNNER_RESOLUTION": "1281x720"}, "RUNNER_RESOLUTION"),
        ({"RUNNER_IDLE_TIMEOUT_S": "-1"}, "RUNNER_IDLE_TIMEOUT_S"),
        ({"RUNNER_MAX_DURATION_S": "soon"}, "RUNNER_MAX_DURATION_S"),
        ({"GAMING_CODECS": "h265"}, "GAMING_CODECS"),
        ({"GAMING_CODECS": "h264,h264"}, "GAMING_CODECS"),
        ({"GAMING_CODECS": ","}, "GAMING_CODECS"),
        ({"GAMING_MAX_KBPS": "10"}, "GAMING_MAX_KBPS"),
        ({"GAMING_START_KBPS": "lots"}, "GAMING_START_KBPS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}: "):
        Settings.from_env(env)


def test_resolution_and_game_lookup() -> None:
    assert parse_resolution(" 1920X1080 ") == (1920, 1080)
    assert get_game("breakout").name == "breakout"
    with pytest.raises(SettingsError, match="RUNNER_GAME: no game named 'doom'; known games: breakout"):
        get_game("doom")
