//! A component on this host's contract version that also imports
//! `acme:telemetry/send`, which no edgeserve host provides: loading it must
//! fail naming that import.

wit_bindgen::generate!({
    inline: "
        package edgeserve:handler@0.1.2;

        interface handler {
            infer: func(x: list<f32>) -> list<f32>;
        }

        world model-handler {
            import acme:telemetry/send@1.0.0;
            export handler;
        }

        package acme:telemetry@1.0.0 {
            interface send {
                send: func(event: string);
            }
        }
    ",
    world: "edgeserve:handler/model-handler@0.1.2",
    generate_all,
});

struct Handler;

impl exports::edgeserve::handler::handler::Guest for Handler {
    fn infer(x: Vec<f32>) -> Vec<f32> {
        acme::telemetry::send::send("infer");
        x
    }
}

export!(Handler);
