import dataclasses

import numpy as np
import pytest

from monitor.config import FusionConfig
from monitor.constants import LABELS, YAMNET_AUDIOSET_CLASSES, YAMNET_VETO_CLASSES, YAMNET_VOTER_CLASSES
from monitor.fusion import VETO_OFF, VETOES, audioset_evidence, audioset_vote, fuse_batch, fuse_window, majority_label

CFG = FusionConfig().resolve()
CRY, SCREAM, NORMAL = LABELS
GOOSE, ANIMAL, PETS, DOG = 101, 67, 68, 69
"""AudioSet rows: "Goose", "Animal", "Domestic animals, pets", "Dog"."""


def probs(crying: float, screaming: float) -> np.ndarray:
    return np.array([crying, screaming, 1.0 - crying - screaming])


def audioset(crying: float = 0.0, screaming: float = 0.0, baby_laughter: float = 0.0, meow: float = 0.0,
             goose: float = 0.0) -> np.ndarray:
    scores = np.zeros(YAMNET_AUDIOSET_CLASSES)
    scores[YAMNET_VOTER_CLASSES[CRY][-1]] = crying
    scores[YAMNET_VOTER_CLASSES[SCREAM][0]] = screaming
    scores[YAMNET_VETO_CLASSES["laughter"][1]] = baby_laughter
    scores[YAMNET_VETO_CLASSES["cat"][2]] = meow
    scores[GOOSE] = goose
    return scores


def test_weighted_average_in_label_order():
    cfg = dataclasses.replace(CFG, weight_yamnet=0.75, weight_wav2vec2=0.25)
    fused = fuse_window(probs(0.8, 0.1), probs(0.2, 0.6), None, cfg)
    np.testing.assert_allclose(fused.probs, 0.75 * probs(0.8, 0.1) + 0.25 * probs(0.2, 0.6))
    assert fused.average_label == CRY
    assert fused.prob(SCREAM) == pytest.approx(0.75 * 0.1 + 0.25 * 0.6)


def test_weights_renormalise_without_wav2vec2():
    cfg = dataclasses.replace(CFG, weight_yamnet=0.3, weight_wav2vec2=0.7)
    fused = fuse_window(probs(0.7, 0.2), None, audioset(crying=0.5), cfg)
    np.testing.assert_allclose(fused.probs, probs(0.7, 0.2))
    assert set(fused.votes) == {"yamnet", "audioset"}


def test_zero_weight_yamnet_alone_still_counts():
    cfg = dataclasses.replace(CFG, weight_yamnet=0.0, weight_wav2vec2=1.0)
    np.testing.assert_allclose(fuse_window(probs(0.7, 0.2), None, None, cfg).probs, probs(0.7, 0.2))
    np.testing.assert_allclose(fuse_window(probs(0.7, 0.2), probs(0.1, 0.1), None, cfg).probs, probs(0.1, 0.1))


@pytest.mark.parametrize("row", YAMNET_VOTER_CLASSES[CRY])
def test_audioset_voter_reads_the_cry_rows(row):
    scores = np.zeros(YAMNET_AUDIOSET_CLASSES)
    scores[row] = CFG.audioset_vote_threshold
    assert audioset_vote(scores, CFG.audioset_vote_threshold) == CRY
    scores[row] = CFG.audioset_vote_threshold - 0.01
    assert audioset_vote(scores, CFG.audioset_vote_threshold) == NORMAL


def test_audioset_voter_higher_alert_row_wins():
    assert audioset_vote(audioset(crying=0.3, screaming=0.5), 0.2) == SCREAM
    assert audioset_vote(audioset(crying=0.6, screaming=0.5), 0.2) == CRY
    assert audioset_vote(audioset(crying=0.1, screaming=0.1), 0.2) == NORMAL


def test_majority_and_no_majority_rule():
    assert majority_label({"a": CRY, "b": CRY, "c": NORMAL}, fallback=SCREAM) == CRY
    assert majority_label({"a": CRY, "b": SCREAM, "c": NORMAL}, fallback=SCREAM) == SCREAM
    assert majority_label({"a": CRY, "b": SCREAM}, fallback=NORMAL) == NORMAL
    assert majority_label({"a": SCREAM}, fallback=NORMAL) == SCREAM


def test_three_voters_two_agree():
    fused = fuse_window(probs(0.9, 0.05), probs(0.3, 0.1), audioset(crying=0.4), CFG)
    assert fused.votes == {"yamnet": CRY, "wav2vec2": NORMAL, "audioset": CRY}
    assert fused.vote_label == CRY


def test_three_different_votes_fall_back_to_the_average_label():
    fused = fuse_window(probs(0.7, 0.2), probs(0.1, 0.3), audioset(screaming=0.5), CFG)
    assert fused.votes == {"yamnet": CRY, "wav2vec2": NORMAL, "audioset": SCREAM}
    assert fused.average_label == CRY
    assert fused.vote_label == CRY


def test_alert_needs_the_enter_threshold():
    threshold = CFG.enter_threshold
    below = fuse_window(probs(threshold - 0.02, 0.0), probs(threshold - 0.02, 0.0), audioset(crying=0.9), CFG)
    above = fuse_window(probs(threshold + 0.02, 0.0), probs(threshold + 0.02, 0.0), audioset(crying=0.9), CFG)
    assert below.alert_label is None and below.alert_score == pytest.approx(threshold - 0.02)
    assert above.alert_label == CRY and above.alert_score == pytest.approx(threshold + 0.02)


def test_alert_needs_the_vote_when_required():
    strong_yamnet = (probs(0.1, 0.95), probs(0.1, 0.4), audioset())
    fused = fuse_window(*strong_yamnet, CFG)
    assert fused.average_label == SCREAM and fused.prob(SCREAM) >= CFG.enter_threshold
    assert fused.vote_label == NORMAL
    assert fused.alert_label is None
    relaxed = dataclasses.replace(CFG, require_vote=False)
    assert fuse_window(*strong_yamnet, relaxed).alert_label == SCREAM


def test_normal_never_alerts():
    fused = fuse_window(probs(0.0, 0.0), probs(0.0, 0.0), audioset(), CFG)
    assert fused.average_label == NORMAL and fused.alert_label is None and fused.alert_score == 0.0


def test_batch_rows_are_accepted_and_bad_shapes_refused():
    assert fuse_window(probs(0.9, 0.0)[None, :], None, None, CFG).average_label == CRY
    with pytest.raises(ValueError, match="yamnet scores must have shape"):
        fuse_window(np.ones(4), None, None, CFG)
    with pytest.raises(ValueError, match="audioset scores must have shape"):
        fuse_window(probs(0.9, 0.0), None, np.ones(3), CFG)
    with pytest.raises(ValueError, match="NaN"):
        fuse_window(np.array([np.nan, 0.5, 0.5]), None, None, CFG)



SUMMED = dataclasses.replace(CFG, alert_on="sum", weight_yamnet=0.5, weight_wav2vec2=0.5, enter_threshold=0.6,
                             enter_threshold_screaming=0.6, require_vote=True)


def test_models_split_between_cry_and_scream_alert_when_summed():
    """YAMNet hears a cry, Wav2Vec2 a scream: by label neither reaches 0.6, together they do."""
    split = (probs(0.75, 0.1), probs(0.05, 0.8), audioset(crying=0.3))
    by_label = fuse_window(*split, dataclasses.replace(SUMMED, alert_on="label"))
    summed = fuse_window(*split, SUMMED)
    assert by_label.alert_label is None
    assert summed.alert_label == SCREAM, "named after the likelier of the two (0.45 against 0.4)"
    assert summed.alert_score == pytest.approx(0.85)
    assert summed.score_of(SCREAM) == summed.score_of(CRY) == pytest.approx(0.85)
    assert by_label.score_of(CRY) == pytest.approx(0.4)


def test_summed_alarm_is_vetoed_only_by_a_normal_majority():
    two_say_normal = (probs(0.3, 0.3), probs(0.3, 0.3), audioset())
    assert fuse_window(*two_say_normal, dataclasses.replace(SUMMED, require_vote=False)).alert_label == CRY
    assert fuse_window(*two_say_normal, SUMMED).alert_label is None
    no_majority = (probs(0.2, 0.5), probs(0.1, 0.2), audioset(crying=0.5))
    fused = fuse_window(*no_majority, SUMMED)
    assert fused.votes == {"yamnet": SCREAM, "wav2vec2": NORMAL, "audioset": CRY}
    assert fused.alert_label is None, "0.5 together is under 0.6"
    louder = fuse_window(probs(0.3, 0.55), probs(0.1, 0.3), audioset(crying=0.5), SUMMED)
    assert louder.alert_label == SCREAM, "no majority says Normal, and 0.625 together reaches the bar"


VETOING = dataclasses.replace(CFG, weight_yamnet=0.5, weight_wav2vec2=0.5, enter_threshold=0.6,
                              enter_threshold_screaming=0.6, require_vote=False, veto_laughter=0.1, veto_cat=0.3,
                              veto_animal=0.5, veto_margin=2.0)
HEADS_HEAR_A_CRY = (probs(0.9, 0.05), probs(0.8, 0.1))


def test_every_veto_category_has_a_threshold():
    assert set(VETOES) == set(YAMNET_VETO_CLASSES) == set(CFG.veto_thresholds())


@pytest.mark.parametrize("alert_on", ["label", "sum"])
@pytest.mark.parametrize(("heard", "category"), [({"baby_laughter": 0.3}, "laughter"), ({"meow": 0.5}, "cat"),
                                                ({"goose": 0.6}, "animal")])
def test_audioset_laughter_cat_or_animal_over_any_cry_vetoes_the_alert(alert_on, heard, category):
    """Both heads call a laughing baby (a meowing cat, a honking goose) a cry; AudioSet hears laughter (a cat, a
    goose) and no cry: no alert."""
    cfg = dataclasses.replace(VETOING, alert_on=alert_on)
    vetoed = fuse_window(*HEADS_HEAR_A_CRY, audioset(crying=0.05, **heard), cfg)
    assert vetoed.alert_label is None and vetoed.vetoed_by == category
    assert vetoed.average_label == CRY and vetoed.score_of(CRY) >= cfg.exit_threshold, \
        "the scores stay: an open cry event is not ended by the veto, only no new hit is counted"
    off = dataclasses.replace(cfg, veto_laughter=1.0, veto_cat=1.0, veto_animal=1.0)
    allowed = fuse_window(*HEADS_HEAR_A_CRY, audioset(crying=0.05, **heard), off)
    assert allowed.alert_label == CRY and allowed.vetoed_by is None


def test_a_veto_set_to_one_is_off_even_when_audioset_saturates():
    """``veto_laughter: 1`` is documented as off; AudioSet's sigmoid rounds to exactly 1.0 on a loud laugh, which
    ``>=`` alone would still let veto."""
    saturated = audioset(baby_laughter=1.0)
    assert fuse_window(*HEADS_HEAR_A_CRY, saturated, VETOING).vetoed_by == "laughter"
    off = dataclasses.replace(VETOING, veto_laughter=VETO_OFF)
    allowed = fuse_window(*HEADS_HEAR_A_CRY, saturated, off)
    assert allowed.alert_label == CRY and allowed.vetoed_by is None and allowed.heard_veto is None


def test_a_veto_needs_its_threshold_and_the_margin_over_any_cry():
    assert fuse_window(*HEADS_HEAR_A_CRY, audioset(crying=0.2, baby_laughter=0.3), VETOING).alert_label == CRY, \
        "0.3 is under twice the cry's 0.2"
    assert fuse_window(*HEADS_HEAR_A_CRY, audioset(screaming=0.2, meow=0.39), VETOING).alert_label == CRY
    assert fuse_window(*HEADS_HEAR_A_CRY, audioset(crying=0.1, baby_laughter=0.3), VETOING).vetoed_by == "laughter"
    assert fuse_window(*HEADS_HEAR_A_CRY, audioset(baby_laughter=0.09), VETOING).alert_label == CRY
    assert fuse_window(*HEADS_HEAR_A_CRY, audioset(meow=0.29), VETOING).alert_label == CRY
    assert fuse_window(*HEADS_HEAR_A_CRY, audioset(goose=0.49), VETOING).alert_label == CRY
    assert fuse_window(*HEADS_HEAR_A_CRY, audioset(crying=0.3, goose=0.59), VETOING).alert_label == CRY
    assert fuse_window(*HEADS_HEAR_A_CRY, None, VETOING).alert_label == CRY, "without AudioSet nothing is vetoed"
    quiet = fuse_window(probs(0.2, 0.1), probs(0.2, 0.1), audioset(baby_laughter=0.9), VETOING)
    assert quiet.alert_label is None and quiet.vetoed_by is None, "only an alert is vetoed"


def test_the_clip_label_obeys_the_vetoes_below_any_alarm_threshold():
    """``nursery-monitor classify`` and the evaluation name a clip by the default fusion: the heads' likeliest label,
    but Normal when AudioSet hears laughter (a cat, an animal) over the cry, as the alarms do, whatever the
    threshold."""
    strict = dataclasses.replace(VETOING, enter_threshold=0.99, enter_threshold_screaming=0.99)
    laughing = fuse_window(*HEADS_HEAR_A_CRY, audioset(crying=0.05, baby_laughter=0.3), strict)
    assert laughing.alert_label is None and laughing.vetoed_by is None, "no alert to veto at 0.99"
    assert laughing.average_label == CRY and laughing.heard_veto == "laughter" and laughing.label == NORMAL
    assert laughing.label_probs[LABELS.index(NORMAL)] == pytest.approx(1.0)
    assert LABELS[int(np.argmax(laughing.label_probs))] == laughing.label
    crying = fuse_window(*HEADS_HEAR_A_CRY, audioset(crying=0.2, baby_laughter=0.3), strict)
    assert crying.heard_veto is None and crying.label == CRY, "laughter under twice the cry vetoes nothing"
    assert np.array_equal(crying.label_probs, crying.probs)
    calm = fuse_window(probs(0.1, 0.1), probs(0.1, 0.1), audioset(baby_laughter=0.9), strict)
    assert calm.heard_veto == "laughter" and calm.label == NORMAL and np.array_equal(calm.label_probs, calm.probs)


def test_veto_in_a_batch_matches_each_window():
    rng = np.random.default_rng(3)
    count = 200
    yamnet = rng.dirichlet([2, 1, 1], count)
    scores = np.zeros((count, YAMNET_AUDIOSET_CLASSES))
    for groups, scale in ((YAMNET_VOTER_CLASSES, 0.2), (YAMNET_VETO_CLASSES, 1.0)):
        for rows in groups.values():
            heard = rng.random((count, 1)) < 0.3  # each category in some windows, so each is the first in some
            scores[:, list(rows)] = rng.random((count, len(rows))) * scale * rng.random((count, 1)) * heard
    batch = fuse_batch(yamnet, None, audioset_evidence(scores), VETOING)
    assert {VETOES[i] for i in batch.vetoed_by if i >= 0} == set(VETOES)
    for i in range(count):
        one, row = fuse_window(yamnet[i], None, scores[i], VETOING), batch.window(i)
        assert (one.alert_label, one.vetoed_by, one.heard_veto) == (row.alert_label, row.vetoed_by, row.heard_veto)


def test_a_dog_or_animal_in_general_never_vetoes():
    """AudioSet hears some cries as a dog, and its parent row "Animal" fires with any of them: only farm and wild
    animals, fowl and birds are in the animal veto."""
    assert not {ANIMAL, PETS, DOG} & set(YAMNET_VETO_CLASSES["animal"])
    scores = audioset(crying=0.1)
    scores[[ANIMAL, PETS, DOG]] = 0.9
    assert fuse_window(*HEADS_HEAR_A_CRY, scores, VETOING).alert_label == CRY
