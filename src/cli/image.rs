//! The arguments of the commands that make images: `serve`, `push`, `pack`, and the
//! `--layers` and `--image-*` options `export` and `snapshot` share with them.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

/// How images are layered.
#[derive(Args, Debug, Clone)]
pub struct LayersArg {
    /// full: one layer; incremental: a base layer, then one per later snapshot of the lineage
    /// [default: full]
    #[arg(long, value_name = "MODE", value_parser = ["full", "incremental"])]
    pub layers: Option<String>,
}

impl LayersArg {
    pub fn mode(&self) -> cellar_store::oci::LayerMode {
        cellar_store::oci::LayerMode::parse(self.layers.as_deref().unwrap_or("full"))
            .expect("clap checked the mode")
    }
}

/// What an image says about itself.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct ImageArgs {
    /// The image's user
    #[arg(long = "image-user", value_name = "U")]
    pub image_user: Option<String>,
    /// The image's working directory
    #[arg(long = "image-workdir", value_name = "D")]
    pub image_workdir: Option<String>,
    /// An environment variable of the image (repeatable)
    #[arg(long = "image-env", value_name = "K=V", value_parser = parse_env)]
    pub image_env: Vec<String>,
    /// The entrypoint: a JSON array, or words split as a shell would
    #[arg(long = "image-entrypoint", value_name = "E", value_parser = parse_words, allow_hyphen_values = true)]
    pub image_entrypoint: Option<Words>,
    /// The command: a JSON array, or words split as a shell would
    #[arg(long = "image-cmd", value_name = "C", value_parser = parse_words, allow_hyphen_values = true)]
    pub image_cmd: Option<Words>,
    /// An image label (repeatable; snapshot labels are image labels too)
    #[arg(long = "image-label", value_name = "K=V", value_parser = parse_label)]
    pub image_labels: Vec<(String, String)>,
    /// The image's platform [default: the snapshot's, else the host's]
    #[arg(long = "image-platform", value_name = "OS/ARCH")]
    pub image_platform: Option<String>,
}

/// An argument vector given as one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words(pub Vec<String>);

/// A JSON array of strings, or words split as a POSIX shell would (quotes, backslashes).
fn parse_words(s: &str) -> Result<Words, String> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .map(Words)
            .map_err(|e| format!("not a JSON array of strings: {e}"));
    }
    shlex::split(s)
        .map(Words)
        .ok_or_else(|| format!("unbalanced quotes in {s:?}"))
}

/// `HOST:PORT` (`[V6]:PORT` for an IPv6 address): a form `bind` can take. Whether HOST
/// resolves, and the port is free, is for the bind to say.
fn parse_listen(s: &str) -> Result<String, String> {
    let form = "expected HOST:PORT (127.0.0.1:5000, [::1]:5000, localhost:0)";
    let (host, port) = s.rsplit_once(':').ok_or_else(|| form.to_string())?;
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(form.into());
    }
    port.parse::<u16>()
        .map_err(|_| format!("{port:?} is not a port (0 to 65535)"))?;
    Ok(s.to_string())
}

fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() => Ok(s.to_string()),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl ImageArgs {
    /// Whether any `--image-*` option was given.
    pub fn given(&self) -> bool {
        *self != ImageArgs::default()
    }

    pub fn settings(&self) -> cellar_store::oci::ImageSettings {
        cellar_store::oci::ImageSettings {
            user: self.image_user.clone(),
            workdir: self.image_workdir.clone(),
            env: self.image_env.clone(),
            entrypoint: self.image_entrypoint.clone().map(|w| w.0),
            cmd: self.image_cmd.clone().map(|w| w.0),
            labels: self.image_labels.iter().cloned().collect(),
            platform: self.image_platform.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000", value_parser = parse_listen)]
    pub listen: String,
    /// Once listening, print `{"listen": ADDR, "url": URL}` on stdout (the port `--listen
    /// HOST:0` picked), flushed, as one line
    #[arg(long)]
    pub json: bool,
    /// Layer downloads made at once; more wait their turn
    #[arg(long, value_name = "N", default_value_t = crate::serve::Downloads::DEFAULT_MAX,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub max_downloads: u16,
    /// Cut off a download whose client takes nothing for this many seconds
    #[arg(long, value_name = "SECS", default_value_t = crate::serve::Downloads::DEFAULT_SEND_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub send_timeout: u64,
    /// Close a connection whose client takes this many seconds to send a request's header
    /// (counted from when one is awaited, so also an idle connection between requests)
    #[arg(long, value_name = "SECS", default_value_t = crate::serve::Shared::DEFAULT_HEADER_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub header_timeout: u64,
    /// How layers are compressed on the wire. A compressed layer is made (into the store's
    /// tmp/) when its image's manifest is first asked for, to learn its digest, and its
    /// downloads are sent those bytes
    #[arg(long, value_name = "CODEC", default_value = "none", value_parser = ["none", "gzip", "zstd"])]
    pub compression: String,
    #[command(flatten)]
    pub layers: LayersArg,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    /// Where to: REGISTRY/REPO[:TAG], the tag `latest` when none is given
    #[arg(value_name = "REGISTRY/REPO[:TAG]")]
    pub target: String,
    /// How layers are compressed on the wire
    #[arg(long, value_name = "CODEC", default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    pub compression: String,
    /// Allow plain HTTP and unverified TLS (loopback registries get plain HTTP anyway)
    #[arg(long)]
    pub insecure: bool,
    /// Trust the CAs in DIR/*.crt and present the client certificate DIR/NAME.cert with
    /// NAME.key, instead of looking in /etc/containers/certs.d/HOST[:PORT] and
    /// /etc/docker/certs.d/HOST[:PORT] (the system's roots are trusted either way)
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Print the result as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub layers: LayersArg,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Args, Debug)]
pub struct PackArgs {
    /// Snapshot: id, unique id prefix, NAME or NAME~N
    pub snap: String,
    /// Where smolvm writes the pack
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// The smolvm binary
    #[arg(long, value_name = "PATH", default_value = "smolvm")]
    pub smolvm: PathBuf,
    /// Where the in-process registry listens (default: an ephemeral loopback port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = parse_listen)]
    pub listen: String,
    /// HOST:PORT smolvm's VM reaches the registry at (default: the listening address)
    #[arg(long, value_name = "HOST:PORT")]
    pub pull_host: Option<String>,
    /// Report the image reference smolvm was given, and OUT, as JSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub layers: LayersArg,
    #[command(flatten)]
    pub image: ImageArgs,
    /// After `--`: more arguments for `smolvm pack create`
    #[arg(last = true, value_name = "EXTRA")]
    pub extra: Vec<OsString>,
}

pub(super) fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
