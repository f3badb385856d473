/** The API version every Writ manifest carries. */
export const API_VERSION = 'writ.dev/v1alpha1'

export const RESOURCE_KINDS = [
  'Role',
  'Bot',
  'JoinToken',
  'McpServer',
  'User',
  'OidcConnector',
] as const
export type ResourceKind = (typeof RESOURCE_KINDS)[number]

/** A validated manifest as stored. `spec` has the shape of its kind (see `src/policy/manifest.ts`). */
export interface Resource<Spec = Record<string, unknown>> {
  apiVersion: typeof API_VERSION
  kind: ResourceKind
  metadata: { name: string; labels?: Record<string, string> }
  spec: Spec
}
