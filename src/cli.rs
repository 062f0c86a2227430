//! The command line: `qpien-rest` serves; `qpien-rest openapi` prints an OpenAPI
//! rendering; `qpien-rest postman` prints the Postman collection; `qpien-rest connector`
//! writes a Power Platform custom connector folder; `qpien-rest healthcheck` asks a
//! running instance for `/healthz` (for the container's HEALTHCHECK, which has no curl);
//! `qpien-rest keys` manages caller keys.

use std::process::ExitCode;

use crate::connector::{self, ConnectionAuth};
use crate::settings::Settings;
use crate::startup::Application;
use crate::{callers, openapi, telemetry};

const USAGE: &str = "usage: qpien-rest [serve | openapi | postman | connector | healthcheck | keys | help]\n\
  serve        run the service (default); configuration comes from the environment, see README\n\
  openapi [--version 3.1|3.0|2.0]  print the OpenAPI 3.1 (default), OpenAPI 3.0.3 or\n\
               Swagger 2.0 document, as served at http://127.0.0.1:8080, to stdout\n\
  postman      print the Postman collection (v2.1) for this configuration's mode, as served\n\
               at http://127.0.0.1:8080, to stdout\n\
  connector --out DIR  write a Power Platform custom connector (apiDefinition.swagger.json,\n\
               apiProperties.json, icon.png) for PUBLIC_BASE_URL and this configuration's mode\n\
  healthcheck [URL]  exit 0 when URL (default http://127.0.0.1:$PORT/healthz, or $ADMIN_PORT's) answers 2xx, else 1\n\
  keys add|list|revoke --file F ...  manage caller keys (see `qpien-rest keys help`)\n";

pub async fn run(args: Vec<String>) -> ExitCode {
    // Needs no settings: an operator manages keys wherever the file is, whatever the
    // environment of that shell says.
    if args.first().is_some_and(|a| a == "keys") {
        return callers::cli::run(&args[1..]);
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprint!("qpien-rest: {error}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(settings).await,
        Some("openapi") => {
            let version = match args.get(1..).unwrap_or_default() {
                [] => Some(openapi::Version::V31),
                [flag, value] if flag == "--version" => openapi::Version::parse(value),
                _ => None,
            };
            let Some(version) = version else {
                eprint!("qpien-rest: openapi takes --version 3.1, 3.0 or 2.0\n{USAGE}");
                return ExitCode::from(2);
            };
            let document = openapi::default_document(version);
            println!(
                "{}",
                serde_json::to_string_pretty(&document).expect("the document serialises")
            );
            ExitCode::SUCCESS
        }
        Some("postman") => {
            let collection =
                openapi::default_postman_collection(&ConnectionAuth::for_settings(&settings));
            println!(
                "{}",
                serde_json::to_string_pretty(&collection).expect("the collection serialises")
            );
            ExitCode::SUCCESS
        }
        Some("connector") => match args.get(1..).unwrap_or_default() {
            [flag, dir] if flag == "--out" => write_connector(std::path::Path::new(dir), &settings),
            _ => {
                eprint!("qpien-rest: connector takes --out DIR\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("healthcheck") => {
            let url = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| default_healthcheck_url(&settings));
            healthcheck(&url).await
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}{}", callers::cli::USAGE);
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprint!(
                "qpien-rest: unknown command {other:?}\n{USAGE}{}",
                callers::cli::USAGE
            );
            ExitCode::from(2)
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    telemetry::init(settings.log_format);
    let application = match Application::build(settings.clone()).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = %error, "cannot start");
            eprintln!("qpien-rest: cannot start: {error}");
            return if error.is_configuration() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let shown_host = if settings.host.is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        settings.host.to_string()
    };
    let base = format!("http://{shown_host}:{}", application.port());
    let mode = if application.is_service_mode() {
        "service mode"
    } else {
        "pass-through mode"
    };
    let upstream = match &settings.upstream.api_url {
        Some(url) => url.to_string(),
        None => format!("embedded sandbox at {}", application.upstream_url()),
    };
    tracing::info!(upstream = %upstream, mode, "listening on {base}");
    println!("qpien-rest listening on {base} ({mode}, upstream: {upstream})");
    println!("  Swagger UI:   {base}/docs/");
    println!("  OpenAPI:      {base}/openapi.json (3.1), /openapi-3.0.json, /swagger-2.0.json");
    println!("  Postman:      {base}/postman-collection.json");
    if let (Some(port), Some(admin)) = (application.admin_port(), settings.admin) {
        tracing::info!(admin.port = port, "health and metrics on {}", admin.ip());
        println!(
            "  Admin:        /healthz, /readyz, /metrics on {}:{port}",
            admin.ip()
        );
    }
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "server failed");
            ExitCode::FAILURE
        }
    }
}

fn write_connector(dir: &std::path::Path, settings: &Settings) -> ExitCode {
    let written = match connector::write(dir, settings) {
        Ok(written) => written,
        Err(error) => {
            eprintln!(
                "qpien-rest: cannot write the connector into {}: {error}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    for file in &written.files {
        println!("wrote {}", file.display());
    }
    println!("host: {}", written.server);
    match &written.auth {
        ConnectionAuth::Anonymous => println!(
            "connection: asks for nothing (service mode: the service uses its own Qpien key)"
        ),
        ConnectionAuth::HeaderKey {
            header,
            display_name,
            ..
        } => println!("connection: asks for {display_name}, sent in the {header} header"),
    }
    if settings.public_base_url.is_none() || written.server.scheme() != "https" {
        eprintln!(
            "qpien-rest: warning: Power Platform calls the connector from Microsoft's cloud over HTTPS; \
set PUBLIC_BASE_URL to the https:// address it can reach before importing this connector"
        );
    }
    println!(
        "import: paconn create --api-def {def} --api-prop {prop} --icon {icon}",
        def = written.files[0].display(),
        prop = written.files[1].display(),
        icon = written.files[2].display(),
    );
    ExitCode::SUCCESS
}

/// `/healthz` where this configuration serves it: the admin listener when there is one
/// (on `ADMIN_HOST` unless that is every address or loopback), else the public port.
fn default_healthcheck_url(settings: &Settings) -> String {
    match settings.admin {
        Some(admin) if !admin.ip().is_unspecified() && !admin.ip().is_loopback() => {
            format!("http://{admin}/healthz")
        }
        Some(admin) => format!("http://127.0.0.1:{}/healthz", admin.port()),
        None => format!("http://127.0.0.1:{}/healthz", settings.port),
    }
}

async fn healthcheck(url: &str) -> ExitCode {
    crate::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build();
    match client {
        Ok(client) => match client.get(url).send().await {
            Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        },
        Err(_) => ExitCode::FAILURE,
    }
}
