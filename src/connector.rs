//! `qpien-rest connector --out DIR`: a Power Platform custom connector folder, as
//! `paconn create` and the maker portal take it: `apiDefinition.swagger.json` (the
//! Swagger 2.0 rendering for `PUBLIC_BASE_URL`), `apiProperties.json` (connection
//! parameters, brand colour, publisher) and `icon.png`.
//!
//! What a connection asks for follows the configuration, through `ConnectionAuth`: in
//! service mode with caller keys (`API_KEYS_FILE`) the caller key in `X-API-Key`; in
//! service mode without keys nothing, as the service holds the Qpien key; in pass-through
//! mode the caller's Qpien token in `Authorization`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use url::Url;

use crate::openapi;
use crate::public_url::default_server;
use crate::settings::Settings;

pub const DEFINITION_FILE: &str = "apiDefinition.swagger.json";
pub const PROPERTIES_FILE: &str = "apiProperties.json";
pub const ICON_FILE: &str = "icon.png";

/// The name Power Platform gives an API-key connection parameter, whatever the header.
const API_KEY_PARAMETER: &str = "api_key";

/// The colour behind the connector's icon. Independent publishers (who do not own the
/// service behind the connector, as a deployer of this facade does not own Qpien) must
/// use this one.
const BRAND_COLOR: &str = "#da3b01";

/// A 230 × 230 icon in `BRAND_COLOR`, the size connector certification asks for.
const ICON: &[u8] = include_bytes!("connector-icon.png");

/// How a connection authenticates to this service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionAuth {
    /// Nothing to enter: the service calls Qpien with its own key (service mode).
    Anonymous,
    /// A secret the connection sends in `header`, asked for when the connection is made.
    HeaderKey {
        header: &'static str,
        display_name: &'static str,
        description: &'static str,
    },
}

impl ConnectionAuth {
    pub fn for_settings(settings: &Settings) -> Self {
        if settings.is_service_mode() && settings.api_keys_file.is_some() {
            ConnectionAuth::HeaderKey {
                header: "X-API-Key",
                display_name: "Caller key",
                description: "The caller key the operator of this service made for you (qpien-rest keys add); it starts with qpk_.",
            }
        } else if settings.is_service_mode() {
            ConnectionAuth::Anonymous
        } else {
            ConnectionAuth::HeaderKey {
                header: "Authorization",
                display_name: "Qpien access token",
                description: "\"Bearer \" followed by your Qpien access token (from generateOAuthToken); it is forwarded to Qpien as it is.",
            }
        }
    }
}

/// What `write` made, for the command's report.
pub struct Written {
    pub files: Vec<PathBuf>,
    pub server: Url,
    pub auth: ConnectionAuth,
}

/// Writes the connector folder into `dir` (created if missing) for `settings`.
pub fn write(dir: &Path, settings: &Settings) -> std::io::Result<Written> {
    let server = settings
        .public_base_url
        .clone()
        .unwrap_or_else(default_server);
    let auth = ConnectionAuth::for_settings(settings);
    std::fs::create_dir_all(dir)?;
    let pretty = |value: &Value| {
        let mut text = serde_json::to_string_pretty(value).expect("JSON serialises");
        text.push('\n');
        text
    };
    let files = [
        (
            DEFINITION_FILE,
            pretty(&definition(&server, &auth)).into_bytes(),
        ),
        (PROPERTIES_FILE, pretty(&properties(&auth)).into_bytes()),
        (ICON_FILE, ICON.to_vec()),
    ];
    let mut written = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content)?;
        written.push(path);
    }
    Ok(Written {
        files: written,
        server,
        auth,
    })
}

/// The Swagger 2.0 rendering for `server`, with the one security definition `auth` needs.
pub fn definition(server: &Url, auth: &ConnectionAuth) -> Value {
    let mut document = openapi::Renderings::build().render(openapi::Version::Swagger2, server);
    let root = document.as_object_mut().expect("a document is an object");
    root.shift_remove("securityDefinitions");
    let security = match auth {
        ConnectionAuth::Anonymous => None,
        ConnectionAuth::HeaderKey {
            header,
            description,
            ..
        } => {
            root.insert(
                "securityDefinitions".into(),
                json!({ API_KEY_PARAMETER: {
                    "type": "apiKey", "in": "header", "name": header, "description": description,
                } }),
            );
            Some(json!([{ API_KEY_PARAMETER: [] }]))
        }
    };
    let paths = root.get_mut("paths").and_then(Value::as_object_mut);
    for item in paths.into_iter().flat_map(|p| p.values_mut()) {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            match &security {
                Some(security) => operation.insert("security".into(), security.clone()),
                None => operation.shift_remove("security"),
            };
        }
    }
    document
}

/// `apiProperties.json`: what the connection asks for, and how the connector looks.
pub fn properties(auth: &ConnectionAuth) -> Value {
    let parameters = match auth {
        ConnectionAuth::Anonymous => json!({}),
        ConnectionAuth::HeaderKey {
            display_name,
            description,
            ..
        } => json!({ API_KEY_PARAMETER: {
            "type": "securestring",
            "uiDefinition": {
                "displayName": display_name,
                "description": description,
                "tooltip": description,
                "constraints": { "tabIndex": 2, "clearText": false, "required": "true" },
            },
        } }),
    };
    json!({
        "properties": {
            "connectionParameters": parameters,
            "iconBrandColor": BRAND_COLOR,
            "capabilities": [],
            "publisher": "qpien-rest",
            "stackOwner": "Qpien",
        }
    })
}
