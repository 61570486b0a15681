/** The one file of `swagger-ui-dist` (a dependency of `@nestjs/swagger`) the sample loads. */
declare module 'swagger-ui-dist/absolute-path.js' {
  /** The directory that holds Swagger UI's assets. */
  const getAbsoluteFSPath: () => string;
  export default getAbsoluteFSPath;
}
