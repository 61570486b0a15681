/**
 * The part of the platform's response object the controllers use; Express and Fastify both have
 * `header()` and `status()`.
 */
export interface HttpResponse {
  header(name: string, value: string): unknown;
  status(code: number): unknown;
}
