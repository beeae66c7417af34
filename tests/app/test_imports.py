"""POST /v1/admin/imports in process: an import is visible to recommendations at once; a bad file is a 422
naming file/line/column and changes nothing; an erased user's data is refused.  Tiny untrained model."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from core.db.models import Interaction, Item
from core.db.repositories import catalog
from tests.app.conftest import Env

ITEMS = "item,title,genres\nn1,Brand New Film,Drama\ni0,Movie Zero,\n"


def _files(ratings: str, items: str = ITEMS, users: str | None = None) -> dict[str, Any]:
    files = {"ratings": ("my-ratings.csv", ratings, "text/csv"), "items": ("my-items.csv", items, "text/csv")}
    if users is not None:
        files["users"] = ("my-users.csv", users, "text/csv")
    return files


def _post(env: Env, ratings: str, users: str | None = None, scope: str = "admin") -> Any:
    return env.client.post(
        "/v1/admin/imports", files=_files(ratings, users=users), headers=env.keys.header(scope)
    )


def _counts(env: Env) -> tuple[int, int]:
    with env.sessions() as session:
        return (
            session.scalar(select(func.count(Interaction.id))) or 0,
            session.scalar(select(func.count()).select_from(Item)) or 0,
        )


def test_an_import_is_visible_to_recommendations(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    # n1 rated by 13 new users (more than the 12 seeded users): the most rated item, so every other
    # user's first candidate
    ratings = "user,item,rating,timestamp\n" + "".join(f"nu{u},n1,5,{100 + u}\n" for u in range(13))
    ratings += "nu0,i1,2,200\n"
    created = _post(api_env, ratings, users="user,age\nnu0,33\n")
    assert created.status_code == 201, created.text
    assert created.json() == {
        "items_added": 1,
        "items_updated": 1,
        "items_unchanged": 0,
        "profiles_added": 1,
        "profiles_updated": 0,
        "ratings_added": 14,
        "users_rated": 13,
    }
    recommend = keys.header("recommend")
    recs = client.post(
        "/v1/recommendations", json={"user_id": "u1", "k": 1, "pool_size": 1}, headers=recommend
    )
    assert recs.status_code == 200, recs.text
    assert recs.json()["items"][0] == {**recs.json()["items"][0], "item_id": "n1", "title": "Brand New Film"}
    new_user = client.post("/v1/recommendations", json={"user_id": "nu0", "k": 3}, headers=recommend)
    assert new_user.status_code == 200 and "n1" not in {i["item_id"] for i in new_user.json()["items"]}
    # the same file again: every rating is already stored
    again = _post(api_env, ratings)
    assert again.status_code == 409 and again.json()["error"]["code"] == "import_refused"


def test_a_bad_file_is_a_422_with_its_location_and_changes_nothing(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    before = _counts(api_env)
    bad = _post(api_env, "user,item,rating,timestamp\nnu1,n1,5,100\nnu1,i2,5,not-a-time\n")
    assert bad.status_code == 422, bad.text
    error = bad.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"] == {"file": "my-ratings.csv", "line": 3, "column": "timestamp"}
    missing = client.post(
        "/v1/admin/imports", files={"items": ("i.csv", ITEMS)}, headers=keys.header("admin")
    )
    assert missing.status_code == 422
    forbidden = _post(api_env, "user,item,rating,timestamp\n", scope="recommend")
    assert forbidden.status_code == 403
    assert _counts(api_env) == before


def test_an_erased_users_data_is_refused(api_env: Env) -> None:
    client, keys = api_env.client, api_env.keys
    filed = client.post("/v1/erasure-requests", json={"user_id": "u2"}, headers=keys.header("erase"))
    assert filed.status_code == 201
    before = _counts(api_env)
    refused = _post(api_env, "user,item,rating,timestamp\nnu1,n1,5,100\nu2,n1,4,100\n")
    assert refused.status_code == 409, refused.text
    details = refused.json()["error"]["details"]
    assert (details["file"], details["line"], details["column"]) == ("my-ratings.csv", 3, "user")
    assert "u2" not in refused.text
    assert _counts(api_env) == before


def test_openapi_documents_the_import(api_env: Env) -> None:
    spec = api_env.client.get("/openapi.json").json()
    post = spec["paths"]["/v1/admin/imports"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"201", "409", "422"} <= set(post["responses"])
    assert spec["components"]["schemas"]["ImportPublic"]["examples"]


def test_movielens_files_import_into_the_running_service(api_env: Env) -> None:
    """ml-latest-small's headers and quoting, half stars, a user without a profile; then ML-1M's ``::``."""
    movies = 'movieId,title,genres\n71,"City, The (1998)",Drama\n'
    ratings = "userId,movieId,rating,timestamp\n9001,71,3.5,964982703\n9001,i0,3.0,964982704\n"
    created = api_env.client.post(
        "/v1/admin/imports",
        files={"ratings": ("ratings.csv", ratings), "items": ("movies.csv", movies)},
        headers=api_env.keys.header("admin"),
    )
    assert created.status_code == 201, created.text
    assert (created.json()["ratings_added"], created.json()["items_added"]) == (2, 1)
    with api_env.sessions() as session:
        stored = catalog.usable_interactions(session, user_id="9001")  # labels are sealed: read them opened
        labels = dict(zip(stored["item_id"], stored["label"].astype(int), strict=True))
        assert labels == {"71": 1, "i0": 0}  # rating > 3 is a like: 3.5 yes, 3.0 no
        assert session.get(Item, "71").title == "City, The (1998)"  # type: ignore[union-attr]
    dat = api_env.client.post(
        "/v1/admin/imports",
        files={
            "ratings": ("ratings.dat", "9002::71::4::978300760\n"),
            "items": ("movies.dat", "72::Heat (1995)::Action\n"),
        },
        headers=api_env.keys.header("admin"),
    )
    assert dat.status_code == 201, dat.text
    assert dat.json()["ratings_added"] == 1
