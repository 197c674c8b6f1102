//! The preview through the real daemon: the loudspeakers in the area and the population
//! of the villages it touches, read from the district's own files.
//!
//! One town with three villages side by side: 王家沟村 (population 1200) and 李家庄村
//! (800) carry a figure, 石门村 does not; the town's own figure (9000) is not counted
//! because its villages stand for it. A speaker in each of the first two villages.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

#[allow(dead_code, reason = "each test binary uses part of the shared harness")]
mod common;

use common::Node;
use serde_json::{Value, json};
use std::path::Path;

const NODE: Node = Node {
    name: "preview",
    speed: 1.0,
};

fn square(x0: f64) -> Value {
    json!({"type": "Polygon", "coordinates": [[[x0,40.05],[x0 + 0.05,40.05],[x0 + 0.05,40.1],[x0,40.1],[x0,40.05]]]})
}

fn write_district(dir: &Path) {
    let feature = |props: Value, geometry: Value| json!({"type": "Feature", "properties": props, "geometry": geometry});
    let areas = json!({"type": "FeatureCollection", "features": [
        feature(
            json!({"id": "t-1", "kind": "town", "name": "石门镇", "population": 9000}),
            json!({"type": "Polygon", "coordinates": [[[116.0,40.0],[116.3,40.0],[116.3,40.3],[116.0,40.3],[116.0,40.0]]]}),
        ),
        feature(
            json!({"id": "v-1", "kind": "village", "name": "王家沟村", "town": "石门镇", "population": 1200}),
            square(116.05),
        ),
        feature(
            json!({"id": "v-2", "kind": "village", "name": "李家庄村", "town": "石门镇", "population": "800"}),
            square(116.1),
        ),
        feature(
            json!({"id": "v-3", "kind": "village", "name": "石门村", "town": "石门镇"}),
            square(116.15),
        ),
    ]});
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("areas.geojson"), areas.to_string()).unwrap();
    std::fs::write(
        dir.join("people.csv"),
        "id,name,role,supervisor,areas,lon,lat,town,phones\n\
         h1,王村长,village_head,,v-1,116.07,40.07,石门镇,+8613900000001\n\
         r1,李居民,resident,,,116.12,40.07,石门镇,+8613900000002\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("speakers.csv"),
        "id,name,town,lon,lat,areas,device,group\n\
         sp-v1,王家沟村广播,石门镇,116.07,40.07,v-1,speakers-0,v-1\n\
         sp-v2,李家庄村广播,石门镇,116.12,40.07,v-2,speakers-0,v-2\n",
    )
    .unwrap();
}

fn alert(grade: &str, area: Value) -> Value {
    json!({"grade": grade, "kind": "flood", "headline": "山洪预警", "text": "请立即转移", "area": area})
}

#[tokio::test]
async fn preview_counts_speakers_and_the_villages_population() {
    let dir = NODE.tempdir("population");
    write_district(&dir.join("district"));
    let config = NODE.write_config(&dir, "");
    let daemon = NODE.start(&config);
    let api = daemon.api.clone();
    let preview = |body: Value| {
        let api = api.clone();
        async move {
            let r = api.post("/v1/alerts/preview", &body).await;
            assert!(r.status().is_success(), "preview: {}", r.status());
            r.json::<Value>().await.unwrap()
        }
    };

    // A box over the east edge of 王家沟村 and the west of 李家庄村: both villages count
    // whole, the town's own figure is not added; both speakers sound (sp-v1 stands
    // outside the box but covers 王家沟村). The village head answers for 王家沟村, the
    // resident stands inside the box.
    let both = preview(alert(
        "red",
        json!({"type": "Polygon", "coordinates": [[[116.09,40.06],[116.13,40.06],[116.13,40.09],[116.09,40.09],[116.09,40.06]]]}),
    ))
    .await;
    assert_eq!(both["people"], 2, "{both}");
    assert_eq!(both["responsible"], 1, "{both}");
    assert_eq!(both["speakers"], 2, "{both}");
    assert_eq!(both["speakers_sound"], true);
    assert_eq!(both["population"], 2000, "{both}");
    assert_eq!(both["population_unknown_areas"], 0);

    // The whole town: three villages, one without a figure; yellow keeps the speakers
    // silent.
    let town = preview(alert("yellow", json!({"type": "Named", "id": "t-1"}))).await;
    assert_eq!(town["people"], 2, "{town}");
    assert_eq!(town["speakers"], 2, "{town}");
    assert_eq!(town["speakers_sound"], false);
    assert_eq!(town["population"], 2000, "{town}");
    assert_eq!(town["population_unknown_areas"], 1);

    // Only 石门村: unknown (null), not 0.
    let unknown = preview(alert("orange", square(116.16))).await;
    assert_eq!(unknown["speakers"], 0, "{unknown}");
    assert!(unknown["population"].is_null(), "{unknown}");
    assert_eq!(unknown["population_unknown_areas"], 1);

    daemon.stop();
    std::fs::remove_dir_all(&dir).ok();
}
