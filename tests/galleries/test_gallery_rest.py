"""Speaker galleries over REST, through a real server: the contract of docs/galleries.md."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from _helpers import (
    RunningServer,
    ServerFactory,
    assert_scores_close,
    model_env,
    random_voiceprints,
)
from voxmatch import Voiceprint, VoiceprintBatch, compare, merge
from voxmatch.api_keys import add_key

GALLERIES = "/api/galleries"


def b64(voiceprints: list[Voiceprint]) -> list[str]:
    return [voiceprint.to_base64() for voiceprint in voiceprints]


@pytest.fixture
def client(server: RunningServer, request: pytest.FixtureRequest) -> httpx.Client:
    """A client, and a gallery named after the test, removed afterwards."""
    client = server.client()
    name = request.node.name.replace("[", "-").replace("]", "")[:60]
    client.delete(f"{GALLERIES}/{name}")
    client.headers["x-test-gallery"] = name
    return client


def gallery_of(client: httpx.Client) -> str:
    return f"{GALLERIES}/{client.headers['x-test-gallery']}"


def test_gallery_lifecycle_create_describe_list_delete(client: httpx.Client) -> None:
    path = gallery_of(client)
    created = client.put(path)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "gallery": path.rsplit("/", 1)[1],
        "model": "campplus-zh-en-16k-advanced",
        "speakers_count": 0,
        "voiceprints_count": 0,
    }
    assert client.put(path).status_code == 200, "a second PUT finds the gallery"
    assert client.get(path).json() == created.json()
    listed = client.get(GALLERIES).json()["galleries"]
    assert created.json() in listed
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404
    assert created.json() not in client.get(GALLERIES).json()["galleries"]


def test_enrol_describe_add_and_page_speakers(client: httpx.Client) -> None:
    path = gallery_of(client)
    client.put(path)
    first, second, third = random_voiceprints(3, seed=21, speech_length=10.0)
    enrolled = client.put(
        f"{path}/speakers/alice", json={"voiceprints": b64([first]), "metadata": {"case": 7}}
    )
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json() == {
        "speaker_id": "alice",
        "voiceprints_count": 1,
        "speech_length": 10.0,
        "metadata": {"case": 7},
    }
    added = client.post(f"{path}/speakers/alice/voiceprints", json={"voiceprints": b64([second])})
    assert added.status_code == 200, added.text
    assert added.json()["voiceprints_count"] == 2
    assert added.json()["speech_length"] == 20.0
    assert added.json()["metadata"] == {"case": 7}
    client.put(f"{path}/speakers/bob", json={"voiceprints": b64([third])})
    page = client.get(f"{path}/speakers", params={"offset": 1, "limit": 5}).json()
    assert page["speakers_count"] == 2
    assert [speaker["speaker_id"] for speaker in page["speakers"]] == ["bob"]
    assert client.get(path).json()["voiceprints_count"] == 3
    replaced = client.put(f"{path}/speakers/alice", json={"voiceprints": b64([third])})
    assert replaced.status_code == 200
    assert replaced.json()["metadata"] is None
    assert replaced.json()["voiceprints_count"] == 1


def test_search_scores_equal_the_comparison_of_the_merged_speaker(client: httpx.Client) -> None:
    path = gallery_of(client)
    client.put(path)
    rng = np.random.default_rng(4)
    batch = VoiceprintBatch(
        rng.standard_normal((7, 192)).astype(np.float32),
        rng.uniform(2, 40, 7).astype(np.float32),
        "campplus-zh-en-16k-advanced",
    )
    speakers = {"a": [0, 1, 2], "b": [3], "c": [4]}
    for speaker, rows in speakers.items():
        client.put(
            f"{path}/speakers/{speaker}", json={"voiceprints": b64([batch[r] for r in rows])}
        )
    probes = [batch[5], batch[6]]
    answer = client.post(f"{path}/search", json={"voiceprints": b64(probes), "top_k": 2})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    merged = VoiceprintBatch.of([merge([batch[r] for r in rows]) for rows in speakers.values()])
    expected = compare(merged, probes).T  # probes x speakers
    names = list(speakers)
    for probe, result in enumerate(results):
        order = np.argsort(-expected[probe])[:2]
        assert [match["speaker_id"] for match in result["matches"]] == [names[i] for i in order]
        assert_scores_close([m["score"] for m in result["matches"]], expected[probe][order])
        lr = np.exp(expected[probe].astype(np.float64))
        posterior = lr[order] * (0.5 / 3) / (0.5 + 0.5 / 3 * lr.sum())
        np.testing.assert_allclose(
            [m["probability"] for m in result["matches"]], posterior, rtol=1e-3
        )


def test_errors_use_the_spe4_body(client: httpx.Client) -> None:
    path = gallery_of(client)
    missing = client.get(f"{GALLERIES}/no-such-gallery")
    assert missing.status_code == 404
    assert missing.json()["type"] == "resource.not-found"
    assert missing.json()["detail"][0]["location"] == ["path", "gallery"]
    client.put(path)
    assert client.get(f"{path}/speakers/nobody").json()["detail"][0]["location"] == [
        "path",
        "speaker_id",
    ]
    assert client.delete(f"{path}/speakers/nobody").status_code == 404
    good = b64(random_voiceprints(2, seed=3))
    broken = client.put(f"{path}/speakers/x", json={"voiceprints": [good[0], "AAAA" + good[1][4:]]})
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["location"] == ["body", "voiceprints", 1]
    unknown_gallery = client.put(f"{GALLERIES}/none/speakers/x", json={"voiceprints": good})
    assert unknown_gallery.status_code == 404
    bulk = client.post(
        f"{path}/speakers",
        json={
            "speakers": [
                {"speaker_id": "p", "voiceprints": good},
                {"speaker_id": "q", "voiceprints": [good[0], "!" + good[1][1:]]},
            ]
        },
    )
    assert bulk.status_code == 422
    assert bulk.json()["detail"][0]["location"] == ["body", "speakers", 1, "voiceprints", 1]
    assert client.get(path).json()["speakers_count"] == 0, "a refused bulk request enrols no one"
    assert client.post(f"{path}/search", json={"voiceprints": good, "top_k": 0}).status_code == 422
    unknown_model = client.put(f"{GALLERIES}/other", json={"model": "no-such-model"})
    assert unknown_model.status_code == 422
    assert unknown_model.json()["detail"][0]["location"] == ["body", "model"]
    bad_name = client.put(f"{GALLERIES}/-dash")
    assert bad_name.status_code == 422
    assert bad_name.json()["detail"][0]["location"] == ["path", "gallery"]
    oversized = client.put(
        f"{path}/speakers/x", content=b'{"voiceprints": ["' + b"A" * (129 * 2**20) + b'"]}'
    )
    assert oversized.status_code == 413
    assert oversized.json()["type"] == "request.size-limit-exceeded"


@pytest.mark.slow
def test_voiceprints_of_another_model_than_the_gallerys_are_422(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    from tools import corpora
    from voxmatch.models import CAMPPLUS
    from voxmatch.models.speaker_model import load_speaker_model

    # The server knows two models: the default one and a user's own ONNX file.
    model_env()
    converted = load_speaker_model(CAMPPLUS, tmp_path / "convert", [corpora.models_cache_dir()])
    assert converted.model_path is not None
    own = tmp_path / "their-campplus.onnx"
    own.write_bytes(converted.model_path.read_bytes())
    server = server_factory(
        {**model_env(), "VOXMATCH_MODEL_FILE": str(own), "VOXMATCH_MODEL_NAME": "their-campplus"}
    )
    client = server.client()
    assert client.put(f"{GALLERIES}/theirs", json={"model": "their-campplus"}).status_code == 201
    assert client.get(f"{GALLERIES}/theirs").json()["model"] == "their-campplus"
    ours = b64(random_voiceprints(2, seed=8))
    for path, body in (
        (f"{GALLERIES}/theirs/speakers/s", {"voiceprints": ours}),
        (f"{GALLERIES}/theirs/search", {"voiceprints": ours}),
    ):
        refused = client.request("PUT" if "speakers" in path else "POST", path, json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["location"] == ["body", "voiceprints", 0]
        assert refused.json()["detail"][0]["type"] == "voiceprint.mixed-models"
    other_model = client.put(f"{GALLERIES}/theirs", json={"model": CAMPPLUS.name})
    assert other_model.status_code == 422, "the gallery exists with another model"


def test_a_gallery_belongs_to_the_key_that_created_it(
    tmp_path: Path, server_factory: ServerFactory
) -> None:
    key_file = tmp_path / "keys"
    alice, bob = add_key(key_file, "alice"), add_key(key_file, "bob")
    server = server_factory({"VOXMATCH_API_KEYS_FILE": str(key_file)})
    as_alice, as_bob = server.client(), server.client()
    as_alice.headers["x-api-key"], as_bob.headers["x-api-key"] = alice, bob
    assert as_alice.put(f"{GALLERIES}/watch").status_code == 201
    as_alice.put(f"{GALLERIES}/watch/speakers/s", json={"voiceprints": b64(random_voiceprints(1))})
    assert as_bob.get(f"{GALLERIES}/watch").status_code == 404
    assert as_bob.get(GALLERIES).json() == {"galleries": []}
    assert as_bob.put(f"{GALLERIES}/watch").status_code == 201, "bob's names are his own"
    assert as_bob.get(f"{GALLERIES}/watch").json()["speakers_count"] == 0
    assert as_alice.get(f"{GALLERIES}/watch").json()["speakers_count"] == 1


def test_the_openapi_document_shows_every_route_and_its_errors(server: RunningServer) -> None:
    paths = server.client().get("/openapi.json").json()["paths"]
    routes = {
        (method.upper(), path): operation
        for path, operations in paths.items()
        if path.startswith(GALLERIES)
        for method, operation in operations.items()
    }
    assert set(routes) == {
        ("PUT", "/api/galleries/{gallery}"),
        ("GET", "/api/galleries/{gallery}"),
        ("DELETE", "/api/galleries/{gallery}"),
        ("GET", "/api/galleries"),
        ("PUT", "/api/galleries/{gallery}/speakers/{speaker_id}"),
        ("GET", "/api/galleries/{gallery}/speakers/{speaker_id}"),
        ("DELETE", "/api/galleries/{gallery}/speakers/{speaker_id}"),
        ("POST", "/api/galleries/{gallery}/speakers/{speaker_id}/voiceprints"),
        ("GET", "/api/galleries/{gallery}/speakers"),
        ("POST", "/api/galleries/{gallery}/speakers"),
        ("POST", "/api/galleries/{gallery}/search"),
    }
    for operation in routes.values():
        assert {"404", "413", "422"} <= set(operation["responses"])
    search = routes[("POST", "/api/galleries/{gallery}/search")]
    fields = search["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert set(fields) == {"voiceprints", "top_k", "prior_in_gallery"}
    assert "(1 - pi)" in search["description"]


def test_paging_rejects_limits_out_of_range(client: httpx.Client) -> None:
    path = gallery_of(client)
    client.put(path)
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        refused = client.get(f"{path}/speakers", params=params)
        assert refused.status_code == 422, params
        assert refused.json()["type"] == "request.validation-error"
    assert client.get(f"{path}/speakers", params={"limit": 1000}).json()["speakers"] == []


def test_the_documented_bodies_are_the_decoded_bodies(server: RunningServer) -> None:
    import msgspec

    from voxmatch.rest import galleries

    document = server.client().get("/openapi.json").json()
    bodies = {
        ("put", "/api/galleries/{gallery}"): galleries.GalleryBody,
        ("put", "/api/galleries/{gallery}/speakers/{speaker_id}"): galleries.SpeakerBody,
        (
            "post",
            "/api/galleries/{gallery}/speakers/{speaker_id}/voiceprints",
        ): galleries.AddedVoiceprintsBody,
        ("post", "/api/galleries/{gallery}/speakers"): galleries.BulkBody,
        ("post", "/api/galleries/{gallery}/search"): galleries.SearchBody,
    }
    for (method, path), struct in bodies.items():
        operation = document["paths"][path][method]
        shown = operation["requestBody"]["content"]["application/json"]["schema"]
        decoded_document = msgspec.json.schema(struct)
        name = decoded_document["$ref"].rsplit("/", 1)[1]
        decoded = decoded_document["$defs"][name]
        assert shown["properties"].keys() == decoded["properties"].keys(), path
        assert sorted(shown.get("required", [])) == sorted(decoded.get("required", [])), path
        assert shown.get("additionalProperties") == decoded.get("additionalProperties"), path
