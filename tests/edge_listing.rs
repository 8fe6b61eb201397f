//! Listing edges a page at a time: the unfiltered list (read a page at a time from the store)
//! and a filtered one (read whole, then cut) give the same rows, order, totals and next offsets.

mod common;

use serde_json::Value;

use common::{TestApp, unique};

async fn page(app: &TestApp, query: &str) -> Value {
    let (status, _, body) = app
        .get(&format!("/api/v1/edge-locations?{query}"), &app.admin)
        .await;
    assert!(status.is_success(), "{query}: {status} {body}");
    body
}

fn ids(body: &Value) -> Vec<String> {
    body["edgeLocations"]
        .as_array()
        .expect("edgeLocations")
        .iter()
        .map(|e| e["locationId"].as_str().expect("locationId").to_string())
        .collect()
}

#[tokio::test]
async fn an_unfiltered_list_pages_the_fleet_like_a_filtered_one() {
    let app = TestApp::new().await;
    let mut registered = Vec::new();
    for _ in 0..7 {
        let id = unique("pop");
        app.create_edge(&id).await;
        registered.push(id);
    }
    registered.sort();

    let mut unfiltered = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let body = page(&app, &format!("limit=3&offset={at}")).await;
        assert_eq!(body["total"], 7, "{body}");
        // Every edge of the test app is in Europe, so this filter keeps them all.
        let filtered = page(&app, &format!("region=Europe&limit=3&offset={at}")).await;
        assert_eq!(body, filtered, "the two paths differ at offset {at}");
        unfiltered.extend(ids(&body));
        offset = body["nextOffset"].as_u64();
        assert_eq!(body["hasMore"], offset.is_some(), "{body}");
    }
    assert_eq!(unfiltered, registered);

    let past_the_end = page(&app, "limit=3&offset=50").await;
    assert_eq!(past_the_end["total"], 7);
    assert!(ids(&past_the_end).is_empty());
    assert_eq!(past_the_end["hasMore"], false);
}
