//! `cellar serve`: the store as a read-only OCI registry, until SIGINT or SIGTERM.

use std::io::Write;
use std::sync::Arc;

use cellar_store::oci::{Codec, ImageOptions};
use cellar_store::Store;

use crate::cli::ServeArgs;
use crate::output::errln;
use crate::serve::{serve_until_signal, Downloads, Shared};

pub fn run(store: Store, args: ServeArgs) -> anyhow::Result<()> {
    let opts = ImageOptions {
        mode: args.layers.mode(),
        settings: args.image.settings(),
        codec: Codec::parse(&args.compression).expect("clap checked the codec"),
    };
    opts.settings.validate()?;
    let mut shared = Shared::new(Arc::new(store), opts);
    shared.downloads = Downloads::new(args.max_downloads, args.send_timeout);
    shared.header_timeout = std::time::Duration::from_secs(args.header_timeout);
    let shared = Arc::new(shared);
    serve_until_signal(shared, &args.listen, |addr| {
        errln!("cellar: serving the store's snapshots at http://{addr}/v2/ (read-only)");
        if args.json {
            // A script waiting on this line learns the port, and that requests are taken.
            let line = serde_json::json!({"listen": addr, "url": format!("http://{addr}/v2/")});
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    })
}
