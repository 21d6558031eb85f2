/// <reference path="./interfaces/edgeserve-handler-handler.d.ts" />
/// <reference path="./interfaces/edgeserve-handler-model.d.ts" />
/// <reference path="./interfaces/edgeserve-handler-output.d.ts" />
/// <reference path="./interfaces/edgeserve-handler-tensor.d.ts" />
/// <reference path="./interfaces/edgeserve-handler-types.d.ts" />
declare module 'edgeserve:handler/model-handler@0.1.5' {
  export type * as EdgeserveHandlerModel015 from 'edgeserve:handler/model@0.1.5'; // import edgeserve:handler/model@0.1.5
  export type * as EdgeserveHandlerOutput015 from 'edgeserve:handler/output@0.1.5'; // import edgeserve:handler/output@0.1.5
  export type * as EdgeserveHandlerTensor015 from 'edgeserve:handler/tensor@0.1.5'; // import edgeserve:handler/tensor@0.1.5
  export type * as EdgeserveHandlerTypes015 from 'edgeserve:handler/types@0.1.5'; // import edgeserve:handler/types@0.1.5
  export * as handler from 'edgeserve:handler/handler@0.1.5'; // export edgeserve:handler/handler@0.1.5
}
