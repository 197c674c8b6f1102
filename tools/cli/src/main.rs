//! `tocsin`: the operator's command line. Talks to a running `tocsind` over its HTTP API,
//! except `people import`, which checks a people CSV locally and reports every rejected row.

#![allow(
    clippy::disallowed_methods,
    reason = "a CLI binary waits on the wall clock between polls"
)]

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tocsin_core::area::AreaSpec;
use tocsin_router::{AlertState, AlertSummary, DeliveryState, Preview};

/// Tocsin operator CLI.
#[derive(Parser, Debug)]
#[command(name = "tocsin", version, about)]
struct Cli {
    /// The gateway's API.
    #[arg(
        long,
        env = "TOCSIN_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// API token (issuer for send/cancel, viewer for the rest).
    #[arg(long, env = "TOCSIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Alerts: send, preview, status, watch, cancel.
    #[command(subcommand)]
    Alert(AlertCommand),
    /// The people directory.
    #[command(subcommand)]
    People(PeopleCommand),
}

#[derive(Subcommand, Debug)]
enum AlertCommand {
    /// Issue an alert. Prints its id and target counts.
    Send(AlertArgs),
    /// What an alert would do: people, bearers, predicted time to reach everyone.
    Preview(AlertArgs),
    /// One alert's state and counts.
    Status {
        /// Alert id.
        id: String,
    },
    /// Follow an alert live until every record is final.
    Watch {
        /// Alert id.
        id: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0)]
        every: f64,
    },
    /// Cancel an alert: pending attempts stop, everyone reached is told.
    Cancel {
        /// Alert id.
        id: String,
    },
    /// People not yet reached or acknowledged, for the phone list.
    Pending {
        /// Alert id.
        id: String,
    },
}

#[derive(Args, Debug)]
struct AlertArgs {
    /// blue, yellow, orange or red.
    #[arg(long)]
    grade: String,
    /// Hazard kind, e.g. flood, landslide, rainstorm.
    #[arg(long, default_value = "flood")]
    kind: String,
    /// One short line, e.g. 山洪红色预警.
    #[arg(long)]
    headline: String,
    /// What people must do.
    #[arg(long)]
    text: String,
    /// A GeoJSON file: a Polygon/MultiPolygon geometry, a Feature, or a FeatureCollection.
    #[arg(long, conflicts_with = "area_named")]
    area_file: Option<PathBuf>,
    /// A named area id (village, town, hazard point, reservoir), repeatable.
    #[arg(long)]
    area_named: Vec<String>,
    /// Mark as an exercise (drill) on every bearer.
    #[arg(long)]
    exercise: bool,
}

#[derive(Subcommand, Debug)]
enum PeopleCommand {
    /// Check a people CSV before it replaces the directory file: every rejected row and
    /// warning, exit 2 if any row is rejected. The gateway reads the file at start (its
    /// log restores every alert in flight), so restart it to load the new directory.
    Import {
        /// The CSV (columns: id,name,role,supervisor,areas,lon,lat,town,phones).
        file: PathBuf,
        /// Country code for numbers written without one.
        #[arg(long, default_value = "86")]
        default_country: String,
    },
}

/// `println!` that ends the program quietly when the reader went away (`tocsin … | head`)
/// instead of panicking on a broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tocsin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(
            method,
            format!("{}{}", self.base.trim_end_matches('/'), path),
        );
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            let field = value.pointer("/error/field").and_then(Value::as_str);
            match field {
                Some(f) => bail!("{status}: {f}: {msg}"),
                None => bail!("{status}: {msg}"),
            }
        }
        Ok(value)
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api {
        base: cli.server.clone(),
        token: cli.token.clone(),
        http: reqwest::Client::new(),
    };
    match cli.command {
        Command::Alert(AlertCommand::Send(args)) => {
            let body = alert_body(&args)?;
            let v = api
                .call(reqwest::Method::POST, "/v1/alerts", Some(body))
                .await?;
            say!(
                "accepted {}: {} people ({} responsible, {} located in the area)",
                v["id"].as_str().unwrap_or("?"),
                v["people"],
                v["responsible"],
                v["located"]
            );
        }
        Command::Alert(AlertCommand::Preview(args)) => {
            let body = alert_body(&args)?;
            let v = api
                .call(reqwest::Method::POST, "/v1/alerts/preview", Some(body))
                .await?;
            let p: Preview = serde_json::from_value(v).context("unexpected answer")?;
            for line in preview_lines(&p) {
                say!("{line}");
            }
        }
        Command::Alert(AlertCommand::Status { id }) => {
            let v = api
                .call(reqwest::Method::GET, &format!("/v1/alerts/{id}"), None)
                .await?;
            let s: AlertSummary = serde_json::from_value(v).context("unexpected answer")?;
            print_summary(&s);
        }
        Command::Alert(AlertCommand::Watch { id, every }) => loop {
            let v = api
                .call(reqwest::Method::GET, &format!("/v1/alerts/{id}"), None)
                .await?;
            let s: AlertSummary = serde_json::from_value(v).context("unexpected answer")?;
            print_summary(&s);
            if s.state != AlertState::Active {
                break;
            }
            tokio::time::sleep(Duration::from_secs_f64(every.clamp(0.2, 60.0))).await;
        },
        Command::Alert(AlertCommand::Cancel { id }) => {
            let v = api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/alerts/{id}/cancel"),
                    None,
                )
                .await?;
            let s: AlertSummary = serde_json::from_value(v).context("unexpected answer")?;
            print_summary(&s);
        }
        Command::Alert(AlertCommand::Pending { id }) => {
            for state in ["planned", "attempting", "reached", "escalated", "unreached"] {
                let v = api
                    .call(
                        reqwest::Method::GET,
                        &format!("/v1/alerts/{id}/deliveries?state={state}"),
                        None,
                    )
                    .await?;
                for d in v.as_array().into_iter().flatten() {
                    say!(
                        "{:<11} {:<12} {:<10} {:<17} {:<14} {}",
                        state,
                        d["person"].as_str().unwrap_or("?"),
                        d["name"].as_str().unwrap_or("?"),
                        d["role"].as_str().unwrap_or("?"),
                        d["town"].as_str().unwrap_or("?"),
                        door_knock(d)
                    );
                }
            }
        }
        Command::People(PeopleCommand::Import {
            file,
            default_country,
        }) => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let (people, rejected) = tocsin_core::directory::load_people_csv(f, &default_country);
            let mut refused = 0;
            for r in &rejected {
                if r.kept {
                    say!("line {}: imported with a warning: {}", r.line, r.reason);
                } else {
                    refused += 1;
                    say!("line {}: rejected: {}", r.line, r.reason);
                }
            }
            say!("{} people accepted, {refused} rows rejected", people.len());
            if refused > 0 {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}

/// The door-knock column of a pending record: who is asked to go, and whether they
/// accepted (on the way, visit not yet confirmed) — accepted is not confirmed.
fn door_knock(d: &Value) -> String {
    let Some(to) = d["escalated_to"].as_str() else {
        return String::new();
    };
    match d["door_knock"]["state"].as_str() {
        Some("accepted") => {
            let by = d["door_knock"]["accepted_by"].as_str().unwrap_or(to);
            format!("door-knock: {to} (accepted by {by}, visit not yet confirmed)")
        }
        Some("confirmed") => format!("door-knock: {to} (visit confirmed)"),
        _ => format!("door-knock: {to} (assigned)"),
    }
}

/// The preview as operators read it: people, speakers, population, the load per bearer
/// and the predicted time. An unknown population shows as "unknown", never 0, and one
/// with areas lacking a figure as a lower bound.
fn preview_lines(p: &Preview) -> Vec<String> {
    let without = |n: u32| {
        let s = if n == 1 { "" } else { "s" };
        format!("{n} area{s} without a figure")
    };
    let population = match (p.population, p.population_unknown_areas) {
        (None, 0) => "unknown".to_owned(),
        (None, u) => format!("unknown ({})", without(u)),
        (Some(n), 0) => n.to_string(),
        (Some(n), u) => format!("at least {n} ({})", without(u)),
    };
    let speakers = match (p.speakers, p.speakers_sound) {
        (0, _) => "0".to_owned(),
        (n, true) => format!("{n} (will sound)"),
        (n, false) => format!("{n} (silent at this grade)"),
    };
    let mut lines = vec![
        format!(
            "people {}  responsible {}  unreachable {}",
            p.people, p.responsible, p.unreachable
        ),
        format!("speakers {speakers}  population {population}"),
    ];
    for b in &p.bearers {
        lines.push(format!(
            "  {:<8} {:>6} messages on {:>2} devices, {:>7.0} s",
            b.bearer.as_str(),
            b.messages,
            b.devices,
            b.seconds
        ));
    }
    lines.push(format!(
        "predicted time to first-attempt everyone: {:.0} s",
        p.seconds_to_first_attempt_all
    ));
    lines
}

fn print_summary(s: &AlertSummary) {
    let c = &s.counts;
    let get = |st: DeliveryState| c.by_state.get(&st).copied().unwrap_or(0);
    say!(
        "{} [{}] {:?}: targets {}  attempting {}  reached {}  acknowledged {} (late {})  escalated {} (door knock accepted, visit not yet confirmed {})  confirmed {} (late {})  unreached {}  rejected replies {}",
        s.alert.headline,
        s.alert.grade,
        s.state,
        c.targets,
        get(DeliveryState::Attempting) + get(DeliveryState::Planned),
        get(DeliveryState::Reached),
        get(DeliveryState::Acknowledged),
        c.late,
        c.escalated,
        c.door_knocks_accepted,
        get(DeliveryState::Confirmed),
        c.late_door_knocks,
        get(DeliveryState::Unreached),
        c.rejected_replies
    );
}

fn alert_body(args: &AlertArgs) -> anyhow::Result<Value> {
    let mut area: Vec<AreaSpec> = args
        .area_named
        .iter()
        .map(|id| AreaSpec::Named {
            id: id.as_str().into(),
        })
        .collect();
    if let Some(path) = &args.area_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        area.extend(areas_from_geojson(&text).with_context(|| format!("in {}", path.display()))?);
    }
    if area.is_empty() {
        bail!("give --area-file FILE or --area-named ID");
    }
    Ok(json!({
        "grade": args.grade,
        "kind": args.kind,
        "headline": args.headline,
        "text": args.text,
        "area": area,
        "exercise": args.exercise,
    }))
}

/// Reads the area pieces from a GeoJSON geometry, Feature or FeatureCollection.
fn areas_from_geojson(text: &str) -> anyhow::Result<Vec<AreaSpec>> {
    let v: Value = serde_json::from_str(text).context("not JSON")?;
    let geometries: Vec<Value> = match v["type"].as_str() {
        Some("FeatureCollection") => v["features"]
            .as_array()
            .map(|fs| fs.iter().map(|f| f["geometry"].clone()).collect())
            .unwrap_or_default(),
        Some("Feature") => vec![v["geometry"].clone()],
        Some("Polygon" | "MultiPolygon") => vec![v.clone()],
        other => {
            bail!("expected a Polygon, MultiPolygon, Feature or FeatureCollection, found {other:?}")
        }
    };
    geometries
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let mut g = g;
            if let Some(obj) = g.as_object_mut() {
                obj.retain(|k, _| k == "type" || k == "coordinates");
            }
            serde_json::from_value::<AreaSpec>(g).with_context(|| format!("geometry {i}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_shows_speakers_and_population_never_a_false_zero() {
        let answer = json!({
            "people": 12, "responsible": 3, "unreachable": 1,
            "bearers": [{"bearer": "sms", "messages": 11, "devices": 2, "seconds": 50.0}],
            "seconds_to_first_attempt_all": 50.0,
            "speakers": 2, "speakers_sound": true,
            "population": 1250, "population_unknown_areas": 0
        });
        let p: Preview = serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            preview_lines(&p),
            vec![
                "people 12  responsible 3  unreachable 1",
                "speakers 2 (will sound)  population 1250",
                "  sms          11 messages on  2 devices,      50 s",
                "predicted time to first-attempt everyone: 50 s",
            ]
        );
        let line = |population: Value, unknown: u32, sound: bool| {
            let mut a = answer.clone();
            a["population"] = population;
            a["population_unknown_areas"] = json!(unknown);
            a["speakers_sound"] = json!(sound);
            let p: Preview = serde_json::from_value(a).unwrap_or_else(|e| panic!("{e}"));
            preview_lines(&p).swap_remove(1)
        };
        assert_eq!(
            line(Value::Null, 0, true),
            "speakers 2 (will sound)  population unknown"
        );
        assert_eq!(
            line(Value::Null, 2, false),
            "speakers 2 (silent at this grade)  population unknown (2 areas without a figure)"
        );
        assert_eq!(
            line(json!(800), 1, true),
            "speakers 2 (will sound)  population at least 800 (1 area without a figure)"
        );
        // A daemon from before speakers and population: nothing to show, said plainly.
        let old: Preview = serde_json::from_value(json!({
            "people": 1, "responsible": 0, "unreachable": 0, "bearers": [],
            "seconds_to_first_attempt_all": 0.0
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(preview_lines(&old)[1], "speakers 0  population unknown");
    }
}
