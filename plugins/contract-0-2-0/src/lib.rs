//! A component built against `edgeserve:handler@0.2.0`, a contract version
//! no host implements yet: loading it must fail with an error naming 0.2.0
//! and the host's version, not a linker dump.

wit_bindgen::generate!({
    inline: "
        package edgeserve:handler@0.2.0;

        interface handler {
            infer: func(x: list<f32>) -> list<f32>;
        }

        world model-handler {
            export handler;
        }
    ",
});

struct Handler;

impl exports::edgeserve::handler::handler::Guest for Handler {
    fn infer(x: Vec<f32>) -> Vec<f32> {
        x
    }
}

export!(Handler);
